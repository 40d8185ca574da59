//! A run of broker state changes reduced to its net effect ([`StateBatch`]): a message queued
//! and acknowledged within one batch is never written, a retained topic set three times is
//! written once. Pure.

use super::rows::{options_column, properties_column};
use crate::broker::Subscription;
use crate::broker::{MessageSeq, StateChange};
use crate::store::{QueueRow, SessionRow, StateBatch, StoredMessage, SubscriptionRow, WillRow};
use std::collections::HashMap;

fn stored(message: &crate::broker::Message) -> StoredMessage {
    StoredMessage {
        topic: message.topic.as_str().to_owned(),
        payload: message.payload.to_vec(),
        qos: message.qos as u8,
        retain: message.retain,
        properties: properties_column(message.properties.as_deref()),
    }
}

fn expiry_secs(expiry: Option<std::time::Duration>) -> Option<i64> {
    expiry.map(|e| i64::try_from(e.as_secs()).unwrap_or(i64::MAX))
}

fn seq(seq: MessageSeq) -> i64 {
    seq.0.get() as i64
}

/// The changes of one batch so far, keyed so that a later change replaces an earlier one.
#[derive(Default)]
pub struct NetChanges {
    dropped: Vec<String>,
    sessions: HashMap<String, SessionEntry>,
    subscriptions: HashMap<(String, String), Option<Subscription>>,
    /// Messages queued in this batch, not yet written.
    queued: HashMap<i64, QueueRow>,
    sent: HashMap<i64, u16>,
    released: Vec<i64>,
    delivered: Vec<i64>,
    inbound: HashMap<(String, u16), bool>,
    retained: HashMap<String, Option<StoredMessage>>,
    wills: HashMap<String, Option<WillRow>>,
    changes: usize,
}

enum SessionEntry {
    /// Opened in this batch (the row is written whole).
    Opened(SessionRow),
    /// Only closed in this batch (the row exists): when, and its expiry interval (seconds).
    Closed(i64, Option<i64>),
}

impl NetChanges {
    /// How many changes went in.
    pub fn len(&self) -> usize {
        self.changes
    }

    pub fn add(&mut self, change: StateChange) {
        self.changes += 1;
        match change {
            StateChange::Retain(message) => {
                let value = (!message.payload.is_empty()).then(|| stored(&message));
                self.retained.insert(message.topic.as_str().to_owned(), value);
            }
            StateChange::SessionOpened { client_id, username, expiry } => {
                let row = SessionRow {
                    client_id: client_id.to_string(),
                    username: username.map(|u| u.to_string()),
                    offline_since: None,
                    expiry_secs: expiry_secs(expiry),
                };
                self.sessions.insert(client_id.to_string(), SessionEntry::Opened(row));
            }
            StateChange::SessionClosed { client_id, at_ms, expiry } => {
                let expiry = expiry_secs(expiry);
                match self.sessions.get_mut(&*client_id) {
                    Some(SessionEntry::Opened(row)) => (row.offline_since, row.expiry_secs) = (Some(at_ms), expiry),
                    Some(SessionEntry::Closed(at, secs)) => (*at, *secs) = (at_ms, expiry),
                    None => {
                        self.sessions.insert(client_id.to_string(), SessionEntry::Closed(at_ms, expiry));
                    }
                }
            }
            StateChange::SessionDropped { client_id } => {
                // Everything of this session recorded before is moot: the drop deletes its
                // rows first, and what comes after it in this batch is written after.
                let client_id = client_id.to_string();
                self.sessions.remove(&client_id);
                self.subscriptions.retain(|(c, _), _| *c != client_id);
                let gone: Vec<i64> = self.queued.iter().filter(|(_, row)| row.client_id == client_id).map(|(seq, _)| *seq).collect();
                for seq in gone {
                    self.queued.remove(&seq);
                    self.sent.remove(&seq);
                }
                self.inbound.retain(|(c, _), _| *c != client_id);
                self.dropped.push(client_id);
            }
            StateChange::Subscribed { client_id, filter, subscription } => {
                self.subscriptions.insert((client_id.to_string(), filter.as_str().to_owned()), Some(subscription));
            }
            StateChange::Unsubscribed { client_id, filter } => {
                self.subscriptions.insert((client_id.to_string(), filter.as_str().to_owned()), None);
            }
            StateChange::Queued { client_id, seq: number, message, qos } => {
                let mut message = stored(&message);
                message.qos = qos as u8;
                message.retain = false;
                let row = QueueRow { seq: seq(number), client_id: client_id.to_string(), message, packet_id: None, released: false };
                self.queued.insert(row.seq, row);
            }
            StateChange::Sent { seq: number, packet_id } => match self.queued.get_mut(&seq(number)) {
                Some(row) => row.packet_id = Some(packet_id.get()),
                None => {
                    self.sent.insert(seq(number), packet_id.get());
                }
            },
            StateChange::Released { seq: number } => match self.queued.get_mut(&seq(number)) {
                Some(row) => row.released = true,
                None => self.released.push(seq(number)),
            },
            StateChange::Delivered { seq: number } => {
                // Queued and delivered within one batch: never written at all.
                if self.queued.remove(&seq(number)).is_none() {
                    self.sent.remove(&seq(number));
                    self.delivered.push(seq(number));
                }
            }
            StateChange::InboundQos2 { client_id, packet_id } => {
                self.inbound.insert((client_id.to_string(), packet_id.get()), true);
            }
            StateChange::InboundReleased { client_id, packet_id } => {
                self.inbound.insert((client_id.to_string(), packet_id.get()), false);
            }
            StateChange::WillSet { client_id, username, will } => {
                let row = WillRow { client_id: client_id.to_string(), username: username.map(|u| u.to_string()), message: stored(&will) };
                self.wills.insert(client_id.to_string(), Some(row));
            }
            StateChange::WillCleared { client_id } => {
                self.wills.insert(client_id.to_string(), None);
            }
        }
    }

    /// The batch to write, in a stable order (sorted keys: two runs write rows alike).
    pub fn into_batch(self) -> StateBatch {
        let mut batch =
            StateBatch { dropped_sessions: self.dropped, released: self.released, delivered: self.delivered, ..StateBatch::default() };
        for (client_id, entry) in self.sessions {
            match entry {
                SessionEntry::Opened(row) => batch.sessions.push(row),
                SessionEntry::Closed(at, expiry) => batch.closed_sessions.push((client_id, at, expiry)),
            }
        }
        for ((client_id, filter), subscription) in self.subscriptions {
            match subscription {
                Some(s) => batch.subscribed.push(SubscriptionRow { client_id, filter, qos: s.qos as u8, options: options_column(&s) }),
                None => batch.unsubscribed.push((client_id, filter)),
            }
        }
        batch.queued = self.queued.into_values().collect();
        batch.sent = self.sent.into_iter().collect();
        for ((client_id, packet_id), received) in self.inbound {
            if received {
                batch.inbound_received.push((client_id, packet_id));
            } else {
                batch.inbound_released.push((client_id, packet_id));
            }
        }
        for (topic, message) in self.retained {
            match message {
                Some(message) => batch.retained.push(message),
                None => batch.retained_cleared.push(topic),
            }
        }
        for (client_id, will) in self.wills {
            match will {
                Some(will) => batch.wills.push(will),
                None => batch.wills_cleared.push(client_id),
            }
        }
        batch.sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        batch.closed_sessions.sort();
        batch.subscribed.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
        batch.unsubscribed.sort();
        batch.queued.sort_by_key(|row| row.seq);
        batch.sent.sort();
        batch.inbound_received.sort();
        batch.inbound_released.sort();
        batch.retained.sort_by(|a, b| a.topic.cmp(&b.topic));
        batch.retained_cleared.sort();
        batch.wills.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        batch.wills_cleared.sort();
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Message;
    use mqtt_codec::{PacketId, QoS, TopicFilter, TopicName};
    use std::num::NonZeroU64;
    use std::sync::Arc;

    fn message(topic: &str, payload: &'static str) -> Arc<Message> {
        Arc::new(Message::new(TopicName::parse(topic).unwrap(), payload.into(), QoS::AtLeastOnce, true))
    }

    fn number(n: u64) -> MessageSeq {
        MessageSeq(NonZeroU64::new(n).unwrap())
    }

    fn queued(client: &str, n: u64) -> StateChange {
        StateChange::Queued { client_id: client.into(), seq: number(n), message: message("t", "x"), qos: QoS::ExactlyOnce }
    }

    fn net(changes: impl IntoIterator<Item = StateChange>) -> StateBatch {
        let mut net = NetChanges::default();
        changes.into_iter().for_each(|c| net.add(c));
        net.into_batch()
    }

    #[test]
    fn a_message_queued_and_delivered_in_one_batch_is_never_written() {
        let batch =
            net([queued("c", 1), queued("c", 2), StateChange::Delivered { seq: number(1) }, StateChange::Delivered { seq: number(9) }]);
        assert_eq!(batch.queued.iter().map(|r| r.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(batch.delivered, [9], "a message of an earlier batch is deleted");
    }

    #[test]
    fn qos2_progress_of_a_new_message_is_folded_into_its_row() {
        let id = PacketId::new(7).unwrap();
        let batch = net([queued("c", 1), StateChange::Sent { seq: number(1), packet_id: id }, StateChange::Released { seq: number(1) }]);
        assert_eq!((batch.queued[0].packet_id, batch.queued[0].released), (Some(7), true));
        assert!(batch.sent.is_empty() && batch.released.is_empty());
        let batch = net([StateChange::Sent { seq: number(3), packet_id: id }, StateChange::Released { seq: number(4) }]);
        assert_eq!((batch.sent, batch.released), (vec![(3, 7)], vec![4]));
    }

    #[test]
    fn the_last_retained_value_wins_and_an_empty_payload_clears() {
        let batch = net([
            StateChange::Retain(message("a", "1")),
            StateChange::Retain(message("a", "2")),
            StateChange::Retain(message("b", "1")),
            StateChange::Retain(message("b", "")),
        ]);
        assert_eq!(batch.retained.len(), 1);
        assert_eq!(batch.retained[0].payload, b"2");
        assert_eq!(batch.retained_cleared, ["b"]);
    }

    #[test]
    fn a_drop_discards_what_came_before_it_and_keeps_what_came_after() {
        let filter = TopicFilter::parse("t/#").unwrap();
        let batch = net([
            StateChange::SessionOpened { client_id: "c".into(), username: None, expiry: None },
            StateChange::Subscribed { client_id: "c".into(), filter: filter.clone(), subscription: Subscription::qos(QoS::AtLeastOnce) },
            queued("c", 1),
            queued("other", 2),
            StateChange::SessionDropped { client_id: "c".into() },
            StateChange::SessionOpened { client_id: "c".into(), username: Some("u".into()), expiry: None },
            queued("c", 3),
        ]);
        assert_eq!(batch.dropped_sessions, ["c"]);
        assert_eq!(batch.sessions.len(), 1);
        assert_eq!(batch.sessions[0].username.as_deref(), Some("u"));
        assert!(batch.subscribed.is_empty());
        assert_eq!(batch.queued.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_session_opened_and_closed_in_one_batch_is_written_once_offline() {
        let batch = net([
            StateChange::SessionOpened { client_id: "c".into(), username: None, expiry: None },
            StateChange::SessionClosed { client_id: "c".into(), at_ms: 5, expiry: None },
            StateChange::SessionClosed { client_id: "d".into(), at_ms: 6, expiry: Some(std::time::Duration::from_secs(30)) },
        ]);
        assert_eq!(batch.sessions[0].offline_since, Some(5));
        assert_eq!(batch.closed_sessions, [("d".to_owned(), 6, Some(30))]);
    }
}
