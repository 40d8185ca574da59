//! Wills: published when a connection ends without a normal DISCONNECT, at once or (MQTT 5.0)
//! after a will delay interval (§3.1.3.2.2). A delayed will waits until the delay passes or the
//! session ends, whichever comes first; if the client connects again before, it is not
//! published at all [MQTT-3.1.3-9], unless that connection starts a clean session, which ends
//! the old one and publishes its will now.

use super::durability::StateChange;
use super::sessions::unix_ms;
use super::{Broker, Message};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A will waiting for its delay, with who sent it.
#[derive(Debug, Clone)]
pub struct PendingWill {
    token: u64,
    pub will: Arc<Message>,
    pub username: Option<String>,
}

/// The wills waiting, by client id.
#[derive(Debug, Default)]
pub struct DelayedWills {
    pending: Mutex<HashMap<Arc<str>, PendingWill>>,
    next_token: AtomicU64,
}

impl DelayedWills {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, PendingWill>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule(&self, client_id: &Arc<str>, will: Arc<Message>, username: Option<String>) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(Arc::clone(client_id), PendingWill { token, will, username });
        token
    }

    /// The will with `token` if it is still due (it is no longer pending then). `on_taken` runs
    /// under the lock: the will's removal from the store is recorded before a new connection
    /// of that client can record its own will.
    fn take(&self, client_id: &str, token: u64, on_taken: impl FnOnce()) -> Option<PendingWill> {
        let mut pending = self.lock();
        if pending.get(client_id).is_some_and(|p| p.token == token) {
            on_taken();
            return pending.remove(client_id);
        }
        None
    }

    /// Takes the waiting will of `client_id`, which connected again; `on_taken` runs under the
    /// lock as in `take`.
    pub fn cancel(&self, client_id: &str, on_taken: impl FnOnce()) -> Option<PendingWill> {
        let mut pending = self.lock();
        let taken = pending.remove(client_id);
        if taken.is_some() {
            on_taken();
        }
        taken
    }
}

impl Broker {
    /// Publishes `will` after `delay` unless its client connects again first. The will stays
    /// stored until then: if the server stops before, it is published when it starts again.
    pub(super) fn publish_will_later(self: &Arc<Self>, client_id: Arc<str>, username: Option<String>, will: Arc<Message>, delay: Duration) {
        let token = self.delayed_wills.schedule(&client_id, will, username);
        let broker = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let cleared = || broker.durable.record(StateChange::WillCleared { client_id: Arc::clone(&client_id) });
            if let Some(due) = broker.delayed_wills.take(&client_id, token, cleared) {
                broker.publish_will(&due.will, due.username.as_deref());
            }
        });
    }

    /// Publishes `will` if its user may publish on its topic; returns whether it did. Its
    /// message expiry interval starts now (§3.1.3.2.4): until published, a will's
    /// `expires_at_ms` holds the interval.
    pub(super) fn publish_will(&self, will: &Arc<Message>, username: Option<&str>) -> bool {
        if !self.auth.may_publish(username, &will.topic) {
            return false;
        }
        let will = match will.properties.as_deref().and_then(|p| p.expires_at_ms) {
            Some(interval_ms) => {
                let mut message = Message::clone(will);
                if let Some(properties) = message.properties.as_deref_mut() {
                    properties.expires_at_ms = Some(unix_ms() + interval_ms);
                }
                Arc::new(message)
            }
            None => Arc::clone(will),
        };
        self.router.route(will, None, &self.stats, &self.durable);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::{QoS, TopicName};

    fn will() -> Arc<Message> {
        Arc::new(Message::new(TopicName::parse("w").unwrap(), Default::default(), QoS::AtMostOnce, false))
    }

    #[test]
    fn a_cancelled_or_replaced_will_is_not_due() {
        let wills = DelayedWills::default();
        let client: Arc<str> = "c".into();
        let first = wills.schedule(&client, will(), None);
        let second = wills.schedule(&client, will(), None);
        assert!(wills.take("c", first, || {}).is_none(), "replaced by a later will of the same client");
        let mut recorded = 0;
        assert!(wills.cancel("c", || recorded += 1).is_some());
        assert!(wills.take("c", second, || recorded += 1).is_none(), "cancelled: the client connected again");
        let third = wills.schedule(&client, will(), None);
        assert!(wills.take("c", third, || recorded += 1).is_some());
        assert!(wills.take("c", third, || recorded += 1).is_none(), "published once");
        assert_eq!(recorded, 2, "each will's removal recorded once");
    }
}
