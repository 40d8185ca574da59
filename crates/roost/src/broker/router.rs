//! Routes messages to the mailboxes of matching subscriptions and keeps retained messages.
//! Publishers call it from their own tasks: it takes short locks and never awaits.

use super::durability::{is_stored_topic, Durable, StateChange, MAX_RETAINED_TOPIC};
use super::mailbox::{Congestion, Delivery, DeliveryExtra, Mailbox, PushOutcome};
use super::sessions::unix_ms;
use super::stats::BrokerStats;
use super::subscription::{SharedFilter, SharedSubscription, Subscriber, Subscription};
use super::trie::SubscriptionTrie;
use super::Message;
use bytes::Bytes;
use mqtt_codec::{QoS, TopicFilter, TopicName};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Default)]
pub struct Router {
    subscriptions: RwLock<SubscriptionTrie<Subscriber>>,
    /// Shared subscriptions by their full filter (`$share/<group>/<filter>`). Matched one by one:
    /// deployments have a few (one per consumer group), not thousands.
    shared: RwLock<HashMap<Arc<str>, SharedSubscription>>,
    retained: RwLock<Retained>,
    limits: RetainedLimits,
}

/// How many retained messages the broker keeps, and how many payload bytes in all. Past
/// either, a new retained topic is refused: delivered, not retained (counted, logged). So is
/// one whose topic is longer than `MAX_RETAINED_TOPIC` characters.
#[derive(Debug, Clone, Copy)]
pub struct RetainedLimits {
    pub max_count: usize,
    pub max_bytes: usize,
}

impl Default for RetainedLimits {
    fn default() -> Self {
        Self { max_count: 1_000_000, max_bytes: 1 << 30 }
    }
}

#[derive(Default)]
struct Retained {
    messages: HashMap<TopicName, Arc<Message>>,
    bytes: usize,
}

impl Retained {
    /// Stores or clears `message` [MQTT-3.3.1-10, -11]; false if the limits refuse it.
    fn apply(&mut self, message: &Arc<Message>, limits: RetainedLimits) -> bool {
        let old = self.messages.get(&message.topic).map_or(0, |m| m.payload.len());
        if message.payload.is_empty() {
            self.messages.remove(&message.topic);
            self.bytes -= old;
            return true;
        }
        let is_new = old == 0 && !self.messages.contains_key(&message.topic);
        let bytes = self.bytes - old + message.payload.len();
        let too_long = message.topic.as_str().chars().count() > MAX_RETAINED_TOPIC;
        if (is_new && self.messages.len() >= limits.max_count) || bytes > limits.max_bytes || too_long {
            return false;
        }
        self.bytes = bytes;
        self.messages.insert(message.topic.clone(), Arc::clone(message));
        true
    }
}

/// What routing one message did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Routed {
    /// How full the fullest subscriber queue is (see [`Congestion`]).
    pub congestion: Congestion,
    /// Whether it recorded a durable change (a retained message, a message queued for a
    /// persistent session): its acknowledgement waits for [`Durable::committed`].
    pub durable: bool,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Router {
    pub fn new(limits: RetainedLimits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// Retained messages stored before a restart (the limits do not apply to them).
    pub fn restore_retained(&self, messages: Vec<Message>) {
        let mut retained = write(&self.retained);
        for message in messages {
            retained.bytes += message.payload.len();
            retained.messages.insert(message.topic.clone(), Arc::new(message));
        }
    }

    /// Adds or replaces (same session, same filter [MQTT-3.8.4-3]) a subscription; a
    /// `$share/<group>/<filter>` one joins that group's shared subscription. A malformed shared
    /// filter must be refused before (see [`SharedFilter::parse`]); it is ignored here.
    pub fn subscribe(&self, filter: &TopicFilter, session: u64, options: Subscription, mailbox: Arc<Mailbox>) {
        let subscriber = Subscriber { mailbox, options };
        match SharedFilter::parse(filter) {
            None => write(&self.subscriptions).insert(filter, session, options.qos, subscriber),
            Some(Ok(shared)) => {
                let mut groups = write(&self.shared);
                let group = groups.entry(Arc::from(filter.as_str())).or_insert_with(|| SharedSubscription::new(shared.filter));
                match group.members.iter_mut().find(|(id, _)| *id == session) {
                    Some(member) => member.1 = subscriber,
                    None => group.members.push((session, subscriber)),
                }
            }
            Some(Err(_)) => {}
        }
    }

    pub fn unsubscribe(&self, filter: &TopicFilter, session: u64) -> bool {
        if SharedFilter::parse(filter).is_none() {
            return write(&self.subscriptions).remove(filter, session);
        }
        let mut groups = write(&self.shared);
        let Some(group) = groups.get_mut(filter.as_str()) else { return false };
        let before = group.members.len();
        group.members.retain(|(id, _)| *id != session);
        let removed = group.members.len() != before;
        if group.members.is_empty() {
            groups.remove(filter.as_str());
        }
        removed
    }

    /// Whether `session` subscribes with exactly this filter (retain handling 1 [MQTT-3.3.1-10]).
    pub fn is_subscribed(&self, filter: &TopicFilter, session: u64) -> bool {
        match SharedFilter::parse(filter) {
            None => read(&self.subscriptions).contains(filter, session),
            Some(_) => read(&self.shared).get(filter.as_str()).is_some_and(|g| g.members.iter().any(|(id, _)| *id == session)),
        }
    }

    /// Stores or clears a retained message [MQTT-3.3.1-5, -10, -11], then delivers the message
    /// to every matching session once, at the highest QoS of its matching subscriptions
    /// [MQTT-3.3.5-1], with the retain flag cleared [MQTT-3.3.1-9]. Durable changes (the
    /// retained message, QoS 1/2 messages queued for persistent sessions) are recorded in the
    /// order they are made.
    pub fn route(&self, message: Arc<Message>, origin: Option<u64>, stats: &BrokerStats, durable: &Durable) -> Routed {
        let mut routed = Routed::default();
        if message.retain {
            let mut retained = write(&self.retained);
            if retained.apply(&message, self.limits) {
                if is_stored_topic(message.topic.as_str()) {
                    durable.record(StateChange::Retain(Arc::clone(&message)));
                    routed.durable = true;
                }
            } else {
                drop(retained);
                BrokerStats::incr(&stats.retained_refused);
                tracing::warn!(topic = %message.topic, bytes = message.payload.len(), max_count = self.limits.max_count,
                    max_bytes = self.limits.max_bytes, "retained message refused (--max-retained, --max-retained-bytes, or a topic over 768 characters); delivered but not retained");
            }
        }
        let mut targets: Vec<(u64, Subscriber)> = Vec::new();
        read(&self.subscriptions).for_each_match(&message.topic, |session, _, subscriber| {
            // [MQTT-3.8.3-3] no local: not back to the session that published it.
            if !(subscriber.options.no_local && origin == Some(session)) {
                targets.push((session, subscriber.clone()));
            }
        });
        let mut congestion = Congestion::None;
        let mut deliver = |mailbox: &Mailbox, delivery: Delivery| {
            let (outcome, recorded) = push_delivery(mailbox, delivery, durable);
            routed.durable |= recorded;
            match outcome {
                PushOutcome::Queued(c) => congestion = congestion.max(c),
                PushOutcome::Overflow => {}
                PushOutcome::DroppedQoS0 => {
                    congestion = congestion.max(Congestion::Filling);
                    BrokerStats::incr(&stats.dropped_qos0);
                }
                PushOutcome::DroppedOffline => BrokerStats::incr(&stats.dropped_offline),
            }
        };
        // One delivery per session [MQTT-3.3.5-1]: the highest QoS of its matching
        // subscriptions, the retain flag as published if one of them asks for it, and every
        // subscription identifier [MQTT-3.3.4-3].
        targets.sort_unstable_by_key(|(session, _)| *session);
        for same_session in targets.chunk_by(|a, b| a.0 == b.0) {
            let qos = same_session.iter().map(|(_, s)| s.options.qos).max().unwrap_or(QoS::AtMostOnce);
            let retain = message.retain && same_session.iter().any(|(_, s)| s.options.retain_as_published);
            let subscription_ids: Vec<u32> = same_session.iter().filter_map(|(_, s)| s.options.id.map(|id| id.get())).collect();
            let extra = (!subscription_ids.is_empty()).then(|| Box::new(DeliveryExtra { subscription_ids, shared: None }));
            let delivery = Delivery { message: Arc::clone(&message), qos: qos.min(message.qos), retain, seq: None, extra };
            deliver(&same_session[0].1.mailbox, delivery);
        }
        for (key, group) in read(&self.shared).iter() {
            if group.filter.matches(&message.topic) {
                if let Some((_, member)) = group.pick(None) {
                    deliver(&member.mailbox, shared_delivery(&message, key, &member.options));
                }
            }
        }
        routed.congestion = congestion;
        routed
    }

    /// Hands a message a shared subscription sent to `session`, which left without
    /// acknowledging it, to another member of that subscription. False if there is none.
    pub fn redeliver_shared(&self, key: &Arc<str>, message: &Arc<Message>, session: u64, durable: &Durable) -> bool {
        let groups = read(&self.shared);
        let Some((_, member)) = groups.get(key).and_then(|g| g.pick(Some(session))) else { return false };
        let (outcome, _) = push_delivery(&member.mailbox, shared_delivery(message, key, &member.options), durable);
        matches!(outcome, PushOutcome::Queued(_))
    }

    /// Retained messages whose topic matches `filter`, for a new subscription [MQTT-3.3.1-6].
    /// Expired ones (5.0 message expiry) are not returned: they are discarded, from memory and
    /// from the store (§3.3.2.3.3).
    pub fn retained_matching(&self, filter: &TopicFilter, durable: &Durable) -> Vec<Arc<Message>> {
        let now = unix_ms();
        let (live, expired): (Vec<_>, Vec<_>) =
            read(&self.retained).messages.values().filter(|m| filter.matches(&m.topic)).cloned().partition(|m| !m.expired(now));
        if !expired.is_empty() {
            let mut retained = write(&self.retained);
            for message in expired {
                // Unless it was replaced meanwhile.
                if retained.messages.get(&message.topic).is_some_and(|kept| Arc::ptr_eq(kept, &message)) {
                    let clear = Arc::new(Message::new(message.topic.clone(), Bytes::new(), message.qos, true));
                    retained.apply(&clear, self.limits);
                    if is_stored_topic(clear.topic.as_str()) {
                        durable.record(StateChange::Retain(clear));
                    }
                }
            }
        }
        live
    }
}

/// A message as one member of a shared subscription gets it (the retain flag is cleared, as
/// retained messages are never sent on shared subscriptions).
fn shared_delivery(message: &Arc<Message>, key: &Arc<str>, options: &Subscription) -> Delivery {
    let extra = DeliveryExtra { subscription_ids: options.id.map(|id| id.get()).into_iter().collect(), shared: Some(Arc::clone(key)) };
    let retain = message.retain && options.retain_as_published;
    Delivery { message: Arc::clone(message), qos: options.qos.min(message.qos), retain, seq: None, extra: Some(Box::new(extra)) }
}

/// Pushes `delivery` into `mailbox`. A QoS 1/2 copy for a persistent session is numbered and
/// recorded as queued, under the mailbox's lock, so before its subscriber can acknowledge it.
/// Returns the outcome and whether a change was recorded.
pub(super) fn push_delivery(mailbox: &Mailbox, delivery: Delivery, durable: &Durable) -> (PushOutcome, bool) {
    let Some(owner) = mailbox.owner().filter(|_| delivery.qos != QoS::AtMostOnce) else {
        return (mailbox.push(delivery), false);
    };
    let mut recorded = false;
    let outcome = mailbox.push_with(delivery, |d| {
        let seq = durable.next_seq();
        let (client_id, message) = (Arc::clone(&owner.client_id), Arc::clone(&d.message));
        durable.record(StateChange::Queued { client_id, seq, message, qos: d.qos });
        d.seq = Some(seq);
        recorded = true;
    });
    (outcome, recorded)
}

impl Router {
    pub fn subscription_count(&self) -> usize {
        read(&self.subscriptions).len() + read(&self.shared).values().map(|g| g.members.len()).sum::<usize>()
    }

    /// The retained message of `topic`, if there is one.
    pub fn retained(&self, topic: &TopicName) -> Option<Arc<Message>> {
        read(&self.retained).messages.get(topic).cloned()
    }

    /// Retained messages kept, and their payload bytes.
    pub fn retained_count(&self) -> (usize, usize) {
        let retained = read(&self.retained);
        (retained.messages.len(), retained.bytes)
    }
}

#[cfg(test)]
mod retained_tests {
    use super::*;
    use mqtt_codec::TopicName;

    fn retained(topic: &str, payload: &'static str) -> Arc<Message> {
        Arc::new(Message::new(TopicName::parse(topic).unwrap(), payload.into(), QoS::AtLeastOnce, true))
    }

    #[test]
    fn limits_refuse_new_topics_and_bytes_but_never_a_clear() {
        let limits = RetainedLimits { max_count: 2, max_bytes: 10 };
        let mut kept = Retained::default();
        assert!(kept.apply(&retained("a", "1234"), limits));
        assert!(kept.apply(&retained("b", "1234"), limits));
        assert!(!kept.apply(&retained("c", "1"), limits), "a third topic is over max_count");
        assert!(kept.apply(&retained("a", "123456"), limits), "replacing counts the difference: 10 bytes");
        assert!(!kept.apply(&retained("a", "1234567"), limits), "11 bytes");
        assert!(kept.apply(&retained("a", ""), limits), "clearing always works");
        assert_eq!((kept.messages.len(), kept.bytes), (1, 4));
        assert!(kept.apply(&retained("c", "1"), limits));
        let long = "t/".repeat(MAX_RETAINED_TOPIC / 2) + "x";
        assert!(!kept.apply(&retained(&long, "1"), RetainedLimits::default()), "a topic too long to store");
    }
}
