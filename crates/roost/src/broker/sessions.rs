//! Session state that outlives a connection (clean session = 0), and the registry that hands
//! it from one connection to the next, including takeover by a new connection with the same
//! client id [MQTT-3.1.4-2].

use super::config::BrokerConfig;
use super::mailbox::{Delivery, Mailbox};
use super::router::Router;
use mqtt_codec::{PacketId, QoS, TopicFilter};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// An outgoing QoS 1/2 message sent and not yet fully acknowledged.
#[derive(Debug)]
pub struct Outbound {
    pub packet_id: PacketId,
    pub delivery: Delivery,
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    pub released: bool,
}

#[derive(Debug)]
pub struct SessionState {
    pub id: u64,
    pub client_id: String,
    pub clean: bool,
    pub mailbox: Arc<Mailbox>,
    pub subscriptions: HashMap<TopicFilter, QoS>,
    /// In send order, so that a resumed session resends in the original order [MQTT-4.4.0-1].
    pub outbound: VecDeque<Outbound>,
    /// Incoming QoS 2 packet ids received and not yet released by PUBREL: a publish that arrives
    /// again with one of these is not routed twice (exactly once, [MQTT-4.3.3-2]).
    pub inbound_qos2: HashSet<PacketId>,
    /// Incoming QoS 1 packet ids whose publish was committed by ingest, with a hash of its
    /// topic and payload: a DUP resend matching one is acknowledged, not stored again.
    pub stored_qos1: HashMap<PacketId, u64>,
    last_packet_id: u16,
}

impl SessionState {
    /// A free packet identifier [MQTT-2.3.1-2]: not used by any unacknowledged outbound message.
    pub fn next_packet_id(&mut self) -> PacketId {
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.last_packet_id) else { continue };
            if !self.outbound.iter().any(|o| o.packet_id == id) {
                return id;
            }
        }
    }

    fn unsubscribe_all(&self, router: &Router) {
        for filter in self.subscriptions.keys() {
            router.unsubscribe(filter, self.id);
        }
    }
}

enum Slot {
    /// In use by a connection; its mailbox is how a takeover tells that connection to end.
    Online { generation: u64, mailbox: Arc<Mailbox> },
    /// Boxed: most slots are online, and a slot is as large as its largest variant.
    Offline(Box<SessionState>),
}

/// A session claimed by a connection. A takeover rings its mailbox's alarm.
pub struct Claimed {
    pub state: SessionState,
    pub session_present: bool,
    pub generation: u64,
}

#[derive(Default)]
pub struct Sessions {
    slots: Mutex<HashMap<String, Slot>>,
    next_id: AtomicU64,
    /// Rung whenever a connection hands a session back; takeovers wait on it.
    released: Notify,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Claims the session of `client_id` for a new connection: disconnects an existing
    /// connection with that id and waits (up to the takeover timeout) for it to hand over,
    /// then resumes the stored session or starts a new one [MQTT-3.1.2-4, -6].
    pub async fn claim(&self, client_id: &str, clean: bool, router: &Router, config: &BrokerConfig) -> Claimed {
        let deadline = tokio::time::Instant::now() + config.takeover_timeout;
        loop {
            // Registered before the slot is checked, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut slots = self.lock();
                match slots.get(client_id) {
                    Some(Slot::Online { mailbox, .. }) => mailbox.kick(),
                    _ => return self.claim_locked(&mut slots, client_id, clean, router, config),
                }
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                // The old connection did not hand over in time: start afresh. Its state is
                // discarded when it finally ends (its generation no longer matches).
                tracing::warn!(%client_id, "session takeover timed out; starting a new session");
                let mut slots = self.lock();
                slots.remove(client_id);
                return self.claim_locked(&mut slots, client_id, clean, router, config);
            }
        }
    }

    fn claim_locked(
        &self,
        slots: &mut HashMap<String, Slot>,
        client_id: &str,
        clean: bool,
        router: &Router,
        config: &BrokerConfig,
    ) -> Claimed {
        let (mut state, session_present) = match slots.remove(client_id) {
            Some(Slot::Offline(state)) if !clean => (*state, true),
            Some(Slot::Offline(state)) => {
                state.unsubscribe_all(router);
                (self.fresh(client_id, config), false)
            }
            _ => (self.fresh(client_id, config), false),
        };
        state.clean = clean;
        state.mailbox.set_online(true);
        let generation = self.new_id();
        slots.insert(client_id.to_owned(), Slot::Online { generation, mailbox: Arc::clone(&state.mailbox) });
        Claimed { state, session_present, generation }
    }

    fn fresh(&self, client_id: &str, config: &BrokerConfig) -> SessionState {
        SessionState {
            id: self.new_id(),
            client_id: client_id.to_owned(),
            clean: true,
            mailbox: Arc::new(Mailbox::new(config.max_queued_qos0, config.max_queued_qos12)),
            subscriptions: HashMap::new(),
            outbound: VecDeque::new(),
            inbound_qos2: HashSet::new(),
            stored_qos1: HashMap::new(),
            last_packet_id: 0,
        }
    }

    /// Hands a session back when its connection ends: kept for a clean-session-0 client,
    /// discarded otherwise [MQTT-3.1.2-6]. Then signals a waiting takeover.
    pub fn release(&self, generation: u64, state: SessionState, router: &Router) {
        state.mailbox.set_online(false);
        {
            let mut slots = self.lock();
            let ours = matches!(slots.get(&state.client_id), Some(Slot::Online { generation: g, .. }) if *g == generation);
            if ours && !state.clean {
                slots.insert(state.client_id.clone(), Slot::Offline(Box::new(state)));
            } else {
                if ours {
                    slots.remove(&state.client_id);
                }
                drop(slots);
                state.unsubscribe_all(router);
            }
        }
        self.released.notify_waiters();
    }
}

impl Sessions {
    /// A number never handed out before by this broker, for assigned client ids.
    pub fn unique_suffix(&self) -> u64 {
        self.new_id()
    }
}
