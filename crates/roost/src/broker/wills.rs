//! Wills published after a delay (MQTT 5.0 will delay interval, §3.1.3.2.2): a will waits
//! until the delay passes or the session ends, whichever comes first, and is not published at
//! all if the client connects again before [MQTT-3.1.3-9].

use super::durability::StateChange;
use super::{Broker, Message};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The wills waiting, by client id, each with the token of its timer.
#[derive(Debug, Default)]
pub struct DelayedWills {
    pending: Mutex<HashMap<Arc<str>, u64>>,
    next_token: AtomicU64,
}

impl DelayedWills {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule(&self, client_id: &Arc<str>) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(Arc::clone(client_id), token);
        token
    }

    /// Whether the will with `token` is still due (and no longer pending).
    fn take(&self, client_id: &str, token: u64) -> bool {
        let mut pending = self.lock();
        let due = pending.get(client_id) == Some(&token);
        if due {
            pending.remove(client_id);
        }
        due
    }

    /// Cancels the waiting will of `client_id`: it connected again. True if there was one.
    pub fn cancel(&self, client_id: &str) -> bool {
        self.lock().remove(client_id).is_some()
    }
}

impl Broker {
    /// Publishes `will` after `delay` unless its client connects again first. The will stays
    /// stored until then: if the server stops before, it is published when it starts again.
    pub(super) fn publish_will_later(self: &Arc<Self>, client_id: Arc<str>, username: Option<String>, will: Arc<Message>, delay: Duration) {
        let token = self.delayed_wills.schedule(&client_id);
        let broker = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if broker.delayed_wills.take(&client_id, token) {
                broker.publish_will(&will, username.as_deref());
                broker.durable.record(StateChange::WillCleared { client_id });
            }
        });
    }

    /// Publishes a will if its client may publish on its topic.
    pub(super) fn publish_will(&self, will: &Arc<Message>, username: Option<&str>) {
        if self.auth.may_publish(username, &will.topic) {
            self.router.route(Arc::clone(will), None, &self.stats, &self.durable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_or_replaced_will_is_not_due() {
        let wills = DelayedWills::default();
        let client: Arc<str> = "c".into();
        let first = wills.schedule(&client);
        let second = wills.schedule(&client);
        assert!(!wills.take("c", first), "replaced by a later will of the same client");
        assert!(wills.cancel("c"));
        assert!(!wills.take("c", second), "cancelled: the client connected again");
        let third = wills.schedule(&client);
        assert!(wills.take("c", third));
        assert!(!wills.take("c", third), "published once");
    }
}
