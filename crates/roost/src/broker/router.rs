//! Routes messages to the mailboxes of matching subscriptions and keeps retained messages.
//! Publishers call it from their own tasks: it takes short locks and never awaits.

use super::mailbox::{Congestion, Delivery, Mailbox, PushOutcome};
use super::stats::BrokerStats;
use super::trie::SubscriptionTrie;
use super::Message;
use mqtt_codec::{QoS, TopicFilter, TopicName};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Default)]
pub struct Router {
    subscriptions: RwLock<SubscriptionTrie<Arc<Mailbox>>>,
    retained: RwLock<HashMap<TopicName, Arc<Message>>>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Router {
    pub fn subscribe(&self, filter: &TopicFilter, session: u64, qos: QoS, mailbox: Arc<Mailbox>) {
        write(&self.subscriptions).insert(filter, session, qos, mailbox);
    }

    pub fn unsubscribe(&self, filter: &TopicFilter, session: u64) -> bool {
        write(&self.subscriptions).remove(filter, session)
    }

    /// Stores or clears a retained message [MQTT-3.3.1-5, -10, -11], then delivers the message
    /// to every matching session once, at the highest QoS of its matching subscriptions
    /// [MQTT-3.3.5-1], with the retain flag cleared [MQTT-3.3.1-9]. Returns how full the
    /// fullest subscriber queue is (see [`Congestion`]).
    pub fn route(&self, message: Arc<Message>, stats: &BrokerStats) -> Congestion {
        if message.retain {
            let mut retained = write(&self.retained);
            if message.payload.is_empty() {
                retained.remove(&message.topic);
            } else {
                retained.insert(message.topic.clone(), Arc::clone(&message));
            }
        }
        let mut targets: Vec<(u64, QoS, Arc<Mailbox>)> = Vec::new();
        read(&self.subscriptions).for_each_match(&message.topic, |session, qos, mailbox| {
            targets.push((session, qos, Arc::clone(mailbox)));
        });
        if targets.len() > 1 {
            // Highest QoS first per session, then keep the first of each session.
            targets.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            targets.dedup_by_key(|t| t.0);
        }
        let mut congestion = Congestion::None;
        for (_, granted, mailbox) in targets {
            let delivery = Delivery { message: Arc::clone(&message), qos: granted.min(message.qos), retain: false };
            match mailbox.push(delivery) {
                PushOutcome::Queued(c) => congestion = congestion.max(c),
                PushOutcome::Overflow => {}
                PushOutcome::DroppedQoS0 => {
                    congestion = congestion.max(Congestion::Filling);
                    BrokerStats::incr(&stats.dropped_qos0);
                }
                PushOutcome::DroppedOffline => BrokerStats::incr(&stats.dropped_offline),
            }
        }
        congestion
    }

    /// Retained messages whose topic matches `filter`, for a new subscription [MQTT-3.3.1-6].
    pub fn retained_matching(&self, filter: &TopicFilter) -> Vec<Arc<Message>> {
        read(&self.retained).values().filter(|m| filter.matches(&m.topic)).cloned().collect()
    }
}

impl Router {
    pub fn subscription_count(&self) -> usize {
        read(&self.subscriptions).len()
    }
}
