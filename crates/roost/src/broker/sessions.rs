//! Session state that outlives a connection (clean session = 0), and the registry that hands
//! it from one connection to the next, including takeover by a new connection with the same
//! client id [MQTT-3.1.4-2].

use super::config::BrokerConfig;
use super::durability::{Durable, RestoredSession, StateChange};
use super::mailbox::{Alarm, Delivery, DeliveryExtra, Mailbox, Owner, PushOutcome};
use super::resends::CommittedQos1;
use super::router::Router;
use super::subscription::Subscription;
use mqtt_codec::{PacketId, TopicFilter};
// B-trees for the packet-id sets: half the size of a `HashMap` with its hasher state, inline
// in every connection (see the idle-connection figures in BENCHMARKS.md).
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// An outgoing QoS 1/2 message sent and not yet fully acknowledged.
#[derive(Debug)]
pub struct Outbound {
    pub packet_id: PacketId,
    pub delivery: Delivery,
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    pub released: bool,
    /// Not yet sent again on the connection that resumed the session: it waits for room in
    /// the client's receive maximum [MQTT-3.3.4-9].
    pub unsent: bool,
}

#[derive(Debug)]
pub struct SessionState {
    pub id: u64,
    /// Shared with the session's key in the registry.
    pub client_id: Arc<str>,
    pub clean: bool,
    pub mailbox: Arc<Mailbox>,
    pub subscriptions: HashMap<TopicFilter, Subscription>,
    /// In send order, so that a resumed session resends in the original order [MQTT-4.4.0-1].
    /// Changed only through `push_outbound` / `remove_outbound_at`, which keep `outbound_ids`.
    pub outbound: VecDeque<Outbound>,
    /// The packet ids in `outbound`, as a bitset, while it holds more than a few: finding a free
    /// id is then O(1) instead of a scan of the whole in-flight window per message (8% of the
    /// CPU in the QoS 1 fan-in benchmark). Dropped when `outbound` empties.
    outbound_ids: Option<Box<PacketIdBits>>,
    /// Incoming QoS 2 packet ids received and not yet released by PUBREL: a publish that arrives
    /// again with one of these is not routed twice (exactly once, [MQTT-4.3.3-2]).
    pub inbound_qos2: BTreeSet<PacketId>,
    /// The QoS 1 publishes committed by ingest most recently: a DUP resend matching one is
    /// acknowledged, not stored again.
    pub stored_qos1: CommittedQos1,
    last_packet_id: u16,
}

/// Up to this many in-flight messages, a scan is as cheap as the bitset.
const SCAN_LIMIT: usize = 32;

/// One bit per packet id.
#[derive(Debug)]
struct PacketIdBits([u64; 1024]);

impl PacketIdBits {
    fn set(&mut self, id: PacketId, on: bool) {
        let (word, bit) = (usize::from(id.get()) / 64, id.get() % 64);
        if on {
            self.0[word] |= 1 << bit;
        } else {
            self.0[word] &= !(1 << bit);
        }
    }

    fn get(&self, id: PacketId) -> bool {
        self.0[usize::from(id.get()) / 64] & (1 << (id.get() % 64)) != 0
    }
}

impl SessionState {
    /// A free packet identifier [MQTT-2.3.1-2]: not used by any unacknowledged outbound message.
    pub fn next_packet_id(&mut self) -> PacketId {
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.last_packet_id) else { continue };
            let in_use = match &self.outbound_ids {
                Some(bits) => bits.get(id),
                None => self.outbound.iter().any(|o| o.packet_id == id),
            };
            if !in_use {
                return id;
            }
        }
    }

    /// Records a message sent and not yet fully acknowledged.
    pub fn push_outbound(&mut self, outbound: Outbound) {
        if let Some(bits) = &mut self.outbound_ids {
            bits.set(outbound.packet_id, true);
        }
        self.outbound.push_back(outbound);
        if self.outbound_ids.is_none() && self.outbound.len() > SCAN_LIMIT {
            let mut bits = Box::new(PacketIdBits([0; 1024]));
            for o in &self.outbound {
                bits.set(o.packet_id, true);
            }
            self.outbound_ids = Some(bits);
        }
    }

    /// Forgets the in-flight message at `index` (fully acknowledged).
    pub fn remove_outbound_at(&mut self, index: usize) -> Option<Outbound> {
        let removed = self.outbound.remove(index)?;
        if self.outbound.is_empty() {
            self.outbound_ids = None;
        } else if let Some(bits) = &mut self.outbound_ids {
            bits.set(removed.packet_id, false);
        }
        Some(removed)
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
    /// Boxed: most slots are online, and a slot is as large as its largest variant (16 bytes:
    /// one pointer here). Only persistent sessions stay offline.
    Offline(Box<OfflineSession>),
}

struct OfflineSession {
    state: SessionState,
    /// When its connection ended (Unix milliseconds), for expiry.
    since_ms: i64,
    /// How long it is kept offline: the interval a 5.0 client chose, or `None` for the
    /// server's (`--session-expiry`).
    expiry: Option<std::time::Duration>,
}

/// The wall clock in Unix milliseconds: offline times are stored, and compared after restarts.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A persistent session, for the admin view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub client_id: String,
    pub username: Option<String>,
    pub online: bool,
    /// Messages waiting for it: queued, plus (while offline) sent and not acknowledged.
    pub queued: usize,
    pub subscriptions: usize,
    /// When it was last disconnected (Unix milliseconds), while offline.
    pub offline_since_ms: Option<i64>,
}

/// A session claimed by a connection. A takeover rings its mailbox's alarm.
pub struct Claimed {
    pub state: SessionState,
    pub session_present: bool,
    pub generation: u64,
}

#[derive(Default)]
pub struct Sessions {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
    next_id: AtomicU64,
    /// Rung whenever a connection hands a session back; takeovers wait on it.
    released: Notify,
    /// Set (under the `slots` lock) when the server shuts down: no session is claimed after.
    closed: AtomicBool,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A session id for a subscriber inside the server (never a client's).
    pub fn new_internal_id(&self) -> u64 {
        self.new_id()
    }

    /// Claims the session of `client_id` for a new connection: disconnects an existing
    /// connection with that id and waits (up to the takeover timeout) for it to hand over,
    /// then resumes the stored session or starts a new one [MQTT-3.1.2-4, -6]. `None` once the
    /// server is shutting down.
    pub async fn claim(&self, new: NewSession<'_>, router: &Router, config: &BrokerConfig, durable: &Durable) -> Option<Claimed> {
        let client_id = new.client_id;
        let deadline = tokio::time::Instant::now() + config.takeover_timeout;
        loop {
            // Registered before the slot is checked, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut slots = self.lock();
                if self.closed.load(Ordering::Relaxed) {
                    return None;
                }
                match slots.get(client_id) {
                    Some(Slot::Online { mailbox, .. }) => mailbox.ring(Alarm::TakenOver),
                    _ => return Some(self.claim_locked(&mut slots, new, router, config, durable)),
                }
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                // The old connection did not hand over in time: start afresh. Its state is
                // discarded when it finally ends (its generation no longer matches).
                tracing::warn!(%client_id, "session takeover timed out; starting a new session");
                let mut slots = self.lock();
                if self.closed.load(Ordering::Relaxed) {
                    return None;
                }
                slots.remove(client_id);
                durable.record(StateChange::SessionDropped { client_id: client_id.into() });
                return Some(self.claim_locked(&mut slots, new, router, config, durable));
            }
        }
    }

    fn claim_locked(
        &self,
        slots: &mut HashMap<Arc<str>, Slot>,
        new: NewSession<'_>,
        router: &Router,
        config: &BrokerConfig,
        durable: &Durable,
    ) -> Claimed {
        let NewSession { client_id, clean_start, persistent, expiry_secs, username } = new;
        let expiry = expiry_secs.map(|s| std::time::Duration::from_secs(u64::from(s)));
        let owner =
            |state_client_id: &str| persistent.then(|| Owner { client_id: state_client_id.into(), username: username.map(Arc::from) });
        let (mut state, session_present) = match slots.remove(client_id) {
            Some(Slot::Offline(offline)) if !clean_start => (offline.state, true),
            Some(Slot::Offline(offline)) => {
                let state = offline.state;
                // [MQTT-3.1.2-6] clean session: the stored one is discarded.
                state.unsubscribe_all(router);
                durable.record(StateChange::SessionDropped { client_id: Arc::clone(&state.client_id) });
                (self.fresh(client_id, owner(client_id), config), false)
            }
            _ => (self.fresh(client_id, owner(client_id), config), false),
        };
        state.clean = !persistent;
        if persistent || state.mailbox.owner().is_some() {
            // A stored session resumed by a connection that ends it (5.0 session expiry 0) is
            // stored as expiring at once: a restart meanwhile does not bring it back.
            let expiry = if persistent { expiry } else { Some(std::time::Duration::ZERO) };
            durable.record(StateChange::SessionOpened {
                client_id: Arc::clone(&state.client_id),
                username: username.map(Arc::from),
                expiry,
            });
        }
        state.mailbox.set_online(true);
        let generation = self.new_id();
        slots.insert(Arc::clone(&state.client_id), Slot::Online { generation, mailbox: Arc::clone(&state.mailbox) });
        Claimed { state, session_present, generation }
    }

    /// A new session; `owner` for a persistent one.
    pub(super) fn fresh(&self, client_id: &str, owner: Option<Owner>, config: &BrokerConfig) -> SessionState {
        let clean = owner.is_none();
        let mailbox = match owner {
            Some(owner) => Mailbox::persistent(config.max_queued_qos0, config.max_queued_qos12, owner),
            None => Mailbox::new(config.max_queued_qos0, config.max_queued_qos12),
        };
        SessionState {
            id: self.new_id(),
            client_id: client_id.into(),
            clean,
            mailbox: Arc::new(mailbox),
            subscriptions: HashMap::new(),
            outbound: VecDeque::new(),
            outbound_ids: None,
            inbound_qos2: BTreeSet::new(),
            stored_qos1: CommittedQos1::default(),
            last_packet_id: 0,
        }
    }

    /// Hands a session back when its connection ends: kept for a clean-session-0 client,
    /// discarded otherwise [MQTT-3.1.2-6] (a persistent one that an admin dropped, too). Then
    /// signals a waiting takeover.
    /// `expiry`: how long it is kept offline (`None`: the server's `--session-expiry`).
    pub fn release(&self, generation: u64, state: SessionState, expiry: Option<std::time::Duration>, router: &Router, durable: &Durable) {
        state.mailbox.set_online(false);
        {
            let mut slots = self.lock();
            let ours = matches!(slots.get(&*state.client_id), Some(Slot::Online { generation: g, .. }) if *g == generation);
            if ours && !state.clean {
                let since_ms = unix_ms();
                durable.record(StateChange::SessionClosed { client_id: Arc::clone(&state.client_id), at_ms: since_ms, expiry });
                slots.insert(Arc::clone(&state.client_id), Slot::Offline(Box::new(OfflineSession { state, since_ms, expiry })));
            } else {
                if ours {
                    slots.remove(&*state.client_id);
                    if state.mailbox.owner().is_some() {
                        durable.record(StateChange::SessionDropped { client_id: Arc::clone(&state.client_id) });
                    }
                }
                drop(slots);
                state.unsubscribe_all(router);
            }
        }
        self.released.notify_waiters();
    }

    /// Puts back the persistent sessions the server had when it stopped, offline, with their
    /// subscriptions and queues; a QoS 2 message sent before keeps its packet id.
    pub fn restore(&self, sessions: Vec<RestoredSession>, router: &Router, config: &BrokerConfig, durable: &Durable) {
        let now = unix_ms();
        let mut slots = self.lock();
        for restored in sessions {
            let owner = Owner { client_id: Arc::clone(&restored.client_id), username: restored.username.clone() };
            let mut state = self.fresh(&restored.client_id, Some(owner), config);
            for (filter, subscription) in restored.subscriptions {
                router.subscribe(&filter, state.id, subscription, Arc::clone(&state.mailbox));
                state.subscriptions.insert(filter, subscription);
            }
            for message in restored.messages {
                // The identifiers of the subscriptions it matched are not stored with it: they
                // are those of the session's (restored) subscriptions that match its topic.
                let subscription_ids: Vec<u32> = state
                    .subscriptions
                    .iter()
                    .filter(|(filter, s)| s.id.is_some() && filter.matches(&message.message.topic))
                    .filter_map(|(_, s)| s.id.map(|id| id.get()))
                    .collect();
                let extra = (!subscription_ids.is_empty()).then(|| Box::new(DeliveryExtra { subscription_ids, shared: None }));
                let delivery = Delivery { message: message.message, qos: message.qos, retain: false, seq: Some(message.seq), extra };
                match message.packet_id {
                    Some(packet_id) => state.push_outbound(Outbound { packet_id, delivery, released: message.released, unsent: false }),
                    None => {
                        if state.mailbox.push(delivery) == PushOutcome::DroppedOffline {
                            // More than --max-queued were stored (the limit was lowered).
                            durable.record(StateChange::Delivered { seq: message.seq });
                        }
                    }
                }
            }
            state.inbound_qos2.extend(restored.inbound_qos2);
            let since_ms = restored.offline_since_ms.unwrap_or(now);
            let expiry = restored.expiry;
            slots.insert(Arc::clone(&state.client_id), Slot::Offline(Box::new(OfflineSession { state, since_ms, expiry })));
        }
    }

    /// Removes persistent sessions offline for longer than their expiry interval (`expiry` for
    /// those without their own), with their queues. Returns how many.
    pub fn expire_offline(&self, now_ms: i64, expiry: std::time::Duration, router: &Router, durable: &Durable) -> usize {
        let expiry_ms = |own: Option<std::time::Duration>| i64::try_from(own.unwrap_or(expiry).as_millis()).unwrap_or(i64::MAX);
        let expired: Vec<Slot> = self
            .lock()
            .extract_if(
                |_, slot| matches!(slot, Slot::Offline(offline) if now_ms.saturating_sub(offline.since_ms) >= expiry_ms(offline.expiry)),
            )
            .map(|(_, slot)| slot)
            .collect();
        for slot in &expired {
            if let Slot::Offline(offline) = slot {
                let state = &offline.state;
                state.unsubscribe_all(router);
                durable.record(StateChange::SessionDropped { client_id: Arc::clone(&state.client_id) });
                tracing::info!(client_id = %state.client_id, "persistent session expired (--session-expiry); removed with its queue");
            }
        }
        expired.len()
    }

    /// Drops a persistent session with its queue: at once if offline; an online one's
    /// connection is closed first (it is discarded when the connection ends). False if there
    /// is no persistent session with that id.
    pub fn drop_session(&self, client_id: &str, router: &Router, durable: &Durable) -> bool {
        let mut slots = self.lock();
        match slots.get(client_id) {
            Some(Slot::Offline(_)) => {
                let Some(Slot::Offline(offline)) = slots.remove(client_id) else { unreachable!("checked above") };
                drop(slots);
                let state = offline.state;
                state.unsubscribe_all(router);
                durable.record(StateChange::SessionDropped { client_id: Arc::clone(&state.client_id) });
                true
            }
            Some(Slot::Online { mailbox, .. }) if mailbox.owner().is_some() => {
                mailbox.ring(Alarm::Dropped);
                true
            }
            _ => false,
        }
    }

    /// How many persistent sessions are online and offline, and how many messages wait for
    /// them (queued, and in flight while offline).
    pub fn persistent_counts(&self) -> PersistentCounts {
        let slots = self.lock();
        let mut counts = PersistentCounts::default();
        for slot in slots.values() {
            match slot {
                Slot::Online { mailbox, .. } if mailbox.owner().is_some() => {
                    counts.online += 1;
                    counts.queued += mailbox.len();
                }
                Slot::Online { .. } => {}
                Slot::Offline(offline) => {
                    let state = &offline.state;
                    counts.offline += 1;
                    counts.queued += state.mailbox.len() + state.outbound.len();
                }
            }
        }
        counts
    }

    /// The persistent sessions, online and offline, sorted by client id.
    pub fn persistent_sessions(&self) -> Vec<SessionInfo> {
        let slots = self.lock();
        let mut sessions: Vec<SessionInfo> = slots
            .iter()
            .filter_map(|(client_id, slot)| {
                let (mailbox, offline) = match slot {
                    Slot::Online { mailbox, .. } => (mailbox, None),
                    Slot::Offline(offline) => (&offline.state.mailbox, Some((&offline.state, offline.since_ms))),
                };
                let owner = mailbox.owner()?;
                Some(SessionInfo {
                    client_id: client_id.to_string(),
                    username: owner.username.as_deref().map(str::to_owned),
                    online: offline.is_none(),
                    queued: mailbox.len() + offline.map_or(0, |(state, _)| state.outbound.len()),
                    subscriptions: offline.map_or(0, |(state, _)| state.subscriptions.len()),
                    offline_since_ms: offline.map(|(_, since)| since),
                })
            })
            .collect();
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        sessions
    }
}

/// Persistent sessions at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PersistentCounts {
    pub online: usize,
    pub offline: usize,
    pub queued: usize,
}

/// Who asks for a session.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub client_id: &'a str,
    /// Start afresh: a stored session is discarded (3.1.1 clean session [MQTT-3.1.2-6], 5.0
    /// clean start [MQTT-3.1.2-4]).
    pub clean_start: bool,
    /// Keep the session when the connection ends (3.1.1: clean session 0; 5.0: a session
    /// expiry interval over 0).
    pub persistent: bool,
    /// Its own expiry interval in seconds (5.0); `None`: the server's (`--session-expiry`).
    pub expiry_secs: Option<u32>,
    pub username: Option<&'a str>,
}

impl Sessions {
    /// Shutdown: rings every online session's alarm, and refuses claims from now on.
    pub fn close_all(&self) {
        let slots = self.lock();
        self.closed.store(true, Ordering::Relaxed);
        for slot in slots.values() {
            if let Slot::Online { mailbox, .. } = slot {
                mailbox.ring(Alarm::Shutdown);
            }
        }
    }

    /// Keep-alive sweep: rings the alarm of every online session whose client was not heard
    /// from by its deadline (see [`Mailbox::expect_by`]) before `now`. Returns how many.
    pub fn expire_silent(&self, now: u64) -> usize {
        let slots = self.lock();
        slots.values().filter(|slot| matches!(slot, Slot::Online { mailbox, .. } if mailbox.expire_if_silent(now))).count()
    }

    /// A number never handed out before by this broker, for assigned client ids.
    pub fn unique_suffix(&self) -> u64 {
        self.new_id()
    }
}

#[cfg(test)]
mod packet_id_tests {
    use super::*;
    use crate::broker::Message;
    use mqtt_codec::QoS;
    use proptest::prelude::*;

    fn delivery() -> Delivery {
        let message = Message::new(mqtt_codec::TopicName::parse("t").unwrap(), Default::default(), QoS::AtLeastOnce, false);
        Delivery { message: Arc::new(message), qos: QoS::AtLeastOnce, retain: false, seq: None, extra: None }
    }

    /// The id the plain scan would choose: the next counter value no in-flight message uses.
    fn naive_next(last: u16, in_flight: &[u16]) -> u16 {
        let mut candidate = last;
        loop {
            candidate = candidate.wrapping_add(1);
            if candidate != 0 && !in_flight.contains(&candidate) {
                return candidate;
            }
        }
    }

    proptest! {
        /// With or without the bitset (past SCAN_LIMIT), ids are the ones a full scan would pick
        /// [MQTT-2.3.1-2], through sends, out-of-order acks and counter wrap-around.
        #[test]
        fn free_ids_match_a_full_scan(start in any::<u16>(), ops in proptest::collection::vec((0u8..4, any::<u16>()), 1..400)) {
            let sessions = Sessions::default();
            let mut state = sessions.fresh("c", None, &BrokerConfig::default());
            state.last_packet_id = start;
            // Three sends to one ack on average: the window grows past SCAN_LIMIT and shrinks.
            for (op, pick) in ops {
                if op != 0 || state.outbound.is_empty() {
                    let in_flight: Vec<u16> = state.outbound.iter().map(|o| o.packet_id.get()).collect();
                    let expected = naive_next(state.last_packet_id, &in_flight);
                    let id = state.next_packet_id();
                    prop_assert_eq!(id.get(), expected);
                    state.push_outbound(Outbound { packet_id: id, delivery: delivery(), released: false, unsent: false });
                } else {
                    let index = usize::from(pick) % state.outbound.len();
                    state.remove_outbound_at(index);
                }
                // The bitset, when there is one, holds exactly the in-flight ids; none when empty.
                if let Some(bits) = &state.outbound_ids {
                    let set: u32 = bits.0.iter().map(|w| w.count_ones()).sum();
                    prop_assert_eq!(set as usize, state.outbound.len());
                    prop_assert!(state.outbound.iter().all(|o| bits.get(o.packet_id)));
                }
                prop_assert!(!(state.outbound.is_empty() && state.outbound_ids.is_some()));
                prop_assert!(state.outbound.len() <= SCAN_LIMIT || state.outbound_ids.is_some());
            }
        }
    }

    #[test]
    fn a_message_the_counter_laps_keeps_its_id_reserved() {
        let sessions = Sessions::default();
        let mut state = sessions.fresh("c", None, &BrokerConfig::default());
        let stuck = state.next_packet_id();
        state.push_outbound(Outbound { packet_id: stuck, delivery: delivery(), released: false, unsent: false });
        // Keep 40 more in flight (past SCAN_LIMIT) while the counter goes round twice.
        for _ in 0..2 * 65_536 {
            let id = state.next_packet_id();
            assert_ne!(id, stuck);
            state.push_outbound(Outbound { packet_id: id, delivery: delivery(), released: false, unsent: false });
            if state.outbound.len() > 41 {
                state.remove_outbound_at(1);
            }
        }
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use super::*;
    use crate::broker::mailbox::MailboxEvent;
    use std::task::{Context, Poll, Waker};

    fn no_durability() -> Durable {
        Durable::new(Arc::new(crate::broker::NoPersistence), 0)
    }

    fn clean(client_id: &str) -> NewSession<'_> {
        NewSession { client_id, clean_start: true, persistent: false, expiry_secs: None, username: None }
    }

    fn persistent(client_id: &str) -> NewSession<'_> {
        NewSession { client_id, clean_start: false, persistent: true, expiry_secs: None, username: None }
    }

    fn alarm_of(mailbox: &Mailbox) -> Option<Alarm> {
        match mailbox.poll_event(&mut Context::from_waker(Waker::noop()), false) {
            Poll::Ready(MailboxEvent::Alarm(alarm)) => Some(alarm),
            _ => None,
        }
    }

    #[tokio::test]
    async fn keep_alive_sweep_rings_only_silent_online_sessions() {
        let (sessions, router, config) = (Sessions::default(), Router::default(), BrokerConfig::default());
        let durable = no_durability();
        let silent = sessions.claim(clean("silent"), &router, &config, &durable).await.unwrap();
        let chatty = sessions.claim(clean("chatty"), &router, &config, &durable).await.unwrap();
        let no_keep_alive = sessions.claim(clean("forever"), &router, &config, &durable).await.unwrap();
        silent.state.mailbox.expect_by(1_000);
        chatty.state.mailbox.expect_by(5_000);
        assert_eq!(sessions.expire_silent(2_000), 1);
        assert_eq!(alarm_of(&silent.state.mailbox), Some(Alarm::KeepAliveExpired));
        assert_eq!(alarm_of(&chatty.state.mailbox), None);
        assert_eq!(alarm_of(&no_keep_alive.state.mailbox), None);
    }

    #[tokio::test]
    async fn closing_rings_every_online_session_and_refuses_new_ones() {
        let (sessions, router, config) = (Sessions::default(), Router::default(), BrokerConfig::default());
        let durable = no_durability();
        let online = sessions.claim(clean("online"), &router, &config, &durable).await.unwrap();
        let resting = sessions.claim(persistent("resting"), &router, &config, &durable).await.unwrap();
        sessions.release(resting.generation, resting.state, None, &router, &durable);
        sessions.close_all();
        assert_eq!(alarm_of(&online.state.mailbox), Some(Alarm::Shutdown));
        assert!(sessions.claim(clean("late"), &router, &config, &durable).await.is_none(), "no session after shutdown");
        assert!(sessions.claim(persistent("resting"), &router, &config, &durable).await.is_none());
    }
}

#[cfg(test)]
mod size_tests {
    /// One slot per session in the registry, online ones included: it stays two words (an
    /// offline session's state is behind one pointer). A guard, not a timing.
    #[test]
    fn a_registry_slot_stays_two_words() {
        assert_eq!(std::mem::size_of::<super::Slot>(), 16);
    }
}
