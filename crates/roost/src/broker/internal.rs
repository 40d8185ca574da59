//! Subscriptions from inside the server (Home Assistant's birth message, for discovery): a
//! mailbox like a client's, read by a task instead of a socket. QoS 0, bounded like a client's
//! queue: a reader that falls behind loses messages, counted like any subscriber's.

use super::mailbox::{Delivery, Mailbox, MailboxEvent};
use super::subscription::Subscription;
use super::{Broker, Message};
use mqtt_codec::{QoS, TopicFilter};
use std::sync::Arc;

/// Messages queued for an internal subscriber before new ones are dropped.
const QUEUE: usize = 256;

pub struct InternalSubscription {
    broker: Arc<Broker>,
    session: u64,
    filter: TopicFilter,
    mailbox: Arc<Mailbox>,
    ready: std::collections::VecDeque<Delivery>,
}

impl Broker {
    /// Subscribes the server itself to `filter` (retained messages are not replayed).
    pub fn subscribe_internal(self: &Arc<Self>, filter: TopicFilter) -> InternalSubscription {
        let mailbox = Arc::new(Mailbox::new(QUEUE, QUEUE));
        mailbox.set_online(true);
        let session = self.sessions.new_internal_id();
        self.router.subscribe(&filter, session, Subscription::qos(QoS::AtMostOnce), Arc::clone(&mailbox));
        InternalSubscription { broker: Arc::clone(self), session, filter, mailbox, ready: Default::default() }
    }
}

impl InternalSubscription {
    /// The next message; `None` once the broker shuts down.
    pub async fn recv(&mut self) -> Option<Arc<Message>> {
        loop {
            if let Some(delivery) = self.ready.pop_front() {
                return Some(delivery.message);
            }
            match std::future::poll_fn(|cx| self.mailbox.poll_event(cx, true)).await {
                MailboxEvent::Messages => {
                    let mut out = Vec::new();
                    self.mailbox.drain_into(&mut out, QUEUE);
                    self.ready.extend(out);
                }
                MailboxEvent::Alarm(_) => return None,
            }
        }
    }
}

impl Drop for InternalSubscription {
    fn drop(&mut self) {
        self.broker.router.unsubscribe(&self.filter, self.session);
    }
}
