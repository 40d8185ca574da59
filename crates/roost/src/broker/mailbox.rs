//! The bounded queue of messages waiting to be sent to one session, online or not.
//!
//! Publishers push without ever waiting (a short lock, no `.await`); the session's connection
//! task drains it. Limits and overflow policy: see [`super::BrokerConfig`].

use super::durability::MessageSeq;
use super::Message;
use mqtt_codec::QoS;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// One message as this session receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// The QoS granted to this subscriber: the lower of the message's and the subscription's.
    pub qos: QoS,
    /// Set only when sent because of a new subscription to a retained message [MQTT-3.3.1-9].
    pub retain: bool,
    /// Its number in the durable queue of a persistent session (QoS 1/2 only).
    pub seq: Option<MessageSeq>,
    /// Subscription identifiers and the shared subscription it came through; boxed, as most
    /// deliveries have neither.
    pub extra: Option<Box<DeliveryExtra>>,
}

/// What only some deliveries carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryExtra {
    /// The identifiers of the subscriptions it matched [MQTT-3.3.4-3].
    pub subscription_ids: Vec<u32>,
    /// The shared subscription (`$share/<group>/<filter>`) that chose this session: if the
    /// session leaves without acknowledging it, another member gets it.
    pub shared: Option<Arc<str>>,
}

impl Delivery {
    /// The shared subscription this delivery came through, if any.
    pub fn shared(&self) -> Option<&Arc<str>> {
        self.extra.as_ref().and_then(|e| e.shared.as_ref())
    }
}

/// Who a persistent session's mailbox belongs to: its QoS 1/2 messages are stored.
#[derive(Debug)]
pub struct Owner {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
}

/// How full a subscriber's queue is after a push: what its publisher should do before it
/// reads more. The most severe over all subscribers of a publish counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Congestion {
    #[default]
    None,
    /// A queue is over half full, or dropped a QoS 0 message: let the subscriber's task run
    /// (the publisher yields once).
    Filling,
    /// An online session's QoS 1/2 queue is over half full: it will overflow, and be
    /// disconnected, unless the publisher leaves it time to catch up (a short pause).
    Reliable,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Queued(Congestion),
    /// QoS 0 over its limit: dropped and counted.
    DroppedQoS0,
    /// QoS 1/2 over its limit for an online session: it is told to disconnect.
    Overflow,
    /// QoS 1/2 over its limit for an offline session: dropped and counted.
    DroppedOffline,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Delivery>,
    queued_qos0: usize,
    queued_qos12: usize,
    online: bool,
    overflowed: bool,
    /// Why the connection using this session must end, other than an overflow.
    alarm: Option<Alarm>,
    /// The connection task waiting for an alarm, and for a push if `wants_messages`.
    waker: Option<Waker>,
    /// Whether the waiting connection can take messages now (its in-flight window is open).
    /// A push does not wake one that cannot: a subscriber with a full window would otherwise
    /// be woken for nothing by every message published to it.
    wants_messages: bool,
}

impl Inner {
    fn alarm(&self) -> Option<Alarm> {
        self.alarm.or(self.overflowed.then_some(Alarm::Overflow))
    }

    /// Rings `alarm`; the first reason rung stays.
    fn ring(&mut self, alarm: Alarm) -> Option<Waker> {
        self.alarm.get_or_insert(alarm);
        self.waker.take()
    }
}

/// Why the session's connection must end now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// Another connection took this session over [MQTT-3.1.4-2].
    TakenOver,
    /// QoS 1/2 messages over the queue limit: the client cannot keep up.
    Overflow,
    /// Nothing heard from the client within 1.5 times its keep-alive [MQTT-3.1.2-24].
    KeepAliveExpired,
    /// The server is shutting down.
    Shutdown,
    /// An admin dropped this persistent session: it is discarded when the connection ends.
    Dropped,
}

/// What woke the connection waiting on its mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxEvent {
    Alarm(Alarm),
    Messages,
}

/// Also the session's line to its connection. Everything that may need an idle connection
/// (a push, a takeover, an overflow, keep-alive expiry, shutdown) wakes the one task waker
/// stored here, so an idle connection waits without a timer or a waiter node of its own:
/// that is most of what an idle connection costs (BENCHMARKS.md).
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    /// Keep-alive: the broker-clock millisecond by which the client must be heard from again;
    /// 0 for none. Written by the connection on every read, checked by the keep-alive sweep.
    heard_by: AtomicU64,
    /// The limits, as `u32` (settings allow at most 10 million): with `owner` the mailbox
    /// stays in the same allocation size class as before persistence existed.
    max_qos0: u32,
    max_qos12: u32,
    /// Set for a persistent session (clean session 0): what is queued for it is stored.
    owner: Option<Box<Owner>>,
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl Mailbox {
    pub fn new(max_qos0: usize, max_qos12: usize) -> Self {
        let limit = |max: usize| u32::try_from(max).unwrap_or(u32::MAX);
        Self { inner: Mutex::default(), heard_by: AtomicU64::new(0), max_qos0: limit(max_qos0), max_qos12: limit(max_qos12), owner: None }
    }

    /// The mailbox of a persistent session.
    pub fn persistent(max_qos0: usize, max_qos12: usize, owner: Owner) -> Self {
        Self { owner: Some(Box::new(owner)), ..Self::new(max_qos0, max_qos12) }
    }

    /// The persistent session this mailbox belongs to, if it is one.
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_deref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-updated: recover it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, delivery: Delivery) -> PushOutcome {
        self.push_with(delivery, |_| {})
    }

    /// Pushes `delivery`, calling `on_queued` with it (under the lock, so in queue order) if it
    /// is queued rather than dropped: a persistent session's message is numbered and recorded
    /// there, before its subscriber can see it.
    pub fn push_with(&self, mut delivery: Delivery, on_queued: impl FnOnce(&mut Delivery)) -> PushOutcome {
        let mut inner = self.lock();
        let outcome = if delivery.qos == QoS::AtMostOnce {
            if inner.queued_qos0 >= self.max_qos0 as usize {
                return PushOutcome::DroppedQoS0;
            }
            inner.queued_qos0 += 1;
            PushOutcome::Queued(Congestion::None)
        } else if inner.queued_qos12 >= self.max_qos12 as usize {
            if !inner.online {
                return PushOutcome::DroppedOffline;
            }
            inner.overflowed = true;
            let waker = inner.waker.take();
            drop(inner);
            wake(waker);
            return PushOutcome::Overflow;
        } else {
            inner.queued_qos12 += 1;
            PushOutcome::Queued(Congestion::None)
        };
        let outcome = match outcome {
            PushOutcome::Queued(_) => {
                on_queued(&mut delivery);
                inner.queue.push_back(delivery);
                let reliable_filling = inner.queued_qos12 * 2 > self.max_qos12 as usize;
                let congestion = if reliable_filling && inner.online {
                    Congestion::Reliable
                } else if reliable_filling || inner.queued_qos0 * 2 > self.max_qos0 as usize {
                    Congestion::Filling
                } else {
                    Congestion::None
                };
                PushOutcome::Queued(congestion)
            }
            other => other,
        };
        let waker = if inner.wants_messages { inner.waker.take() } else { None };
        drop(inner);
        wake(waker);
        outcome
    }

    /// Takes up to `max_qos12` QoS 1/2 deliveries (the free in-flight window) and any QoS 0 ones
    /// before them, keeping the order. Returns whether the queue overflowed since the last call.
    pub fn drain_into(&self, out: &mut Vec<Delivery>, mut max_qos12: usize) -> bool {
        let mut inner = self.lock();
        while let Some(front) = inner.queue.front() {
            if front.qos == QoS::AtMostOnce {
                inner.queued_qos0 -= 1;
            } else if max_qos12 == 0 {
                break;
            } else {
                max_qos12 -= 1;
                inner.queued_qos12 -= 1;
            }
            out.extend(inner.queue.pop_front());
        }
        std::mem::take(&mut inner.overflowed)
    }

    /// A connection starts (`true`: no alarm pending, no keep-alive yet) or ends using this
    /// session.
    pub fn set_online(&self, online: bool) {
        let mut inner = self.lock();
        inner.online = online;
        inner.waker = None;
        if online {
            inner.alarm = None;
            inner.overflowed = false;
        }
        self.heard_by.store(0, Ordering::Relaxed);
    }

    /// Tells the connection using this session to end now, for `reason`.
    pub fn ring(&self, reason: Alarm) {
        let waker = self.lock().ring(reason);
        wake(waker);
    }

    /// Keep-alive: the client must be heard from again by `deadline` (broker-clock
    /// milliseconds; 0: no keep-alive).
    pub fn expect_by(&self, deadline: u64) {
        self.heard_by.store(deadline, Ordering::Relaxed);
    }

    /// Rings [`Alarm::KeepAliveExpired`] if the keep-alive deadline passed before `now`.
    pub fn expire_if_silent(&self, now: u64) -> bool {
        let deadline = self.heard_by.load(Ordering::Relaxed);
        let expired = deadline != 0 && deadline < now;
        if expired {
            self.ring(Alarm::KeepAliveExpired);
        }
        expired
    }

    /// What the connection must do now: end (an alarm, which always comes first), or send
    /// queued messages (only asked for with `want_messages`, while its in-flight window is
    /// open). Otherwise the task's waker is kept, and woken by the next push or alarm.
    pub fn poll_event(&self, cx: &mut Context<'_>, want_messages: bool) -> Poll<MailboxEvent> {
        let mut inner = self.lock();
        if let Some(alarm) = inner.alarm() {
            return Poll::Ready(MailboxEvent::Alarm(alarm));
        }
        if want_messages && !inner.queue.is_empty() {
            return Poll::Ready(MailboxEvent::Messages);
        }
        inner.wants_messages = want_messages;
        match &mut inner.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Takes out the queued deliveries a shared subscription chose this session for: it is
    /// leaving, and another member gets them.
    pub fn take_shared(&self) -> Vec<Delivery> {
        let mut inner = self.lock();
        if !inner.queue.iter().any(|d| d.shared().is_some()) {
            return Vec::new();
        }
        let (shared, kept): (Vec<Delivery>, Vec<Delivery>) = inner.queue.drain(..).partition(|d| d.shared().is_some());
        inner.queue = kept.into();
        for delivery in &shared {
            match delivery.qos {
                QoS::AtMostOnce => inner.queued_qos0 -= 1,
                _ => inner.queued_qos12 -= 1,
            }
        }
        shared
    }

    /// Puts `deliveries` (taken by `take_shared` and not handed over) back at the head of the
    /// queue, in their order, whatever the limits: they were queued before what came since.
    pub fn put_back(&self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for delivery in deliveries.into_iter().rev() {
            match delivery.qos {
                QoS::AtMostOnce => inner.queued_qos0 += 1,
                _ => inner.queued_qos12 += 1,
            }
            inner.queue.push_front(delivery);
        }
    }

    /// Whether a connection uses this session now.
    pub fn is_online(&self) -> bool {
        self.lock().online
    }

    /// Online with no QoS 1/2 message waiting: a shared subscription's member that keeps up.
    pub fn ready_for_more(&self) -> bool {
        let inner = self.lock();
        inner.online && inner.queued_qos12 == 0
    }

    /// Messages queued and not yet sent.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::TopicName;

    fn delivery(qos: QoS) -> Delivery {
        let message = Message::new(TopicName::parse("t").unwrap(), Default::default(), qos, false);
        Delivery { message: Arc::new(message), qos, retain: false, seq: None, extra: None }
    }

    #[test]
    fn qos0_over_the_limit_is_dropped_and_qos1_overflow_flags_an_online_session() {
        let mailbox = Mailbox::new(1, 1);
        mailbox.set_online(true);
        assert_eq!(mailbox.push(delivery(QoS::AtMostOnce)), PushOutcome::Queued(Congestion::Filling));
        assert_eq!(mailbox.push(delivery(QoS::AtMostOnce)), PushOutcome::DroppedQoS0);
        assert_eq!(mailbox.push(delivery(QoS::AtLeastOnce)), PushOutcome::Queued(Congestion::Reliable));
        assert_eq!(mailbox.push(delivery(QoS::AtLeastOnce)), PushOutcome::Overflow);
        let mut out = Vec::new();
        assert!(mailbox.drain_into(&mut out, 10), "overflow is reported to the session");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn only_an_online_qos12_queue_over_half_asks_publishers_to_pause() {
        let mailbox = Mailbox::new(10, 4);
        assert_eq!(mailbox.push(delivery(QoS::AtLeastOnce)), PushOutcome::Queued(Congestion::None));
        mailbox.push(delivery(QoS::AtLeastOnce));
        // Offline (a persistent session between connections), nobody drains the queue: a
        // pause would not help, and would slow every publisher to it for as long.
        assert_eq!(mailbox.push(delivery(QoS::AtLeastOnce)), PushOutcome::Queued(Congestion::Filling));
        mailbox.set_online(true);
        assert_eq!(mailbox.push(delivery(QoS::AtLeastOnce)), PushOutcome::Queued(Congestion::Reliable));
    }

    #[test]
    fn offline_overflow_drops_instead_of_flagging() {
        let mailbox = Mailbox::new(1, 1);
        mailbox.push(delivery(QoS::ExactlyOnce));
        assert_eq!(mailbox.push(delivery(QoS::ExactlyOnce)), PushOutcome::DroppedOffline);
        assert!(!mailbox.drain_into(&mut Vec::new(), 10));
    }

    #[test]
    fn shared_deliveries_taken_and_put_back_keep_their_order_and_counts() {
        let mailbox = Mailbox::new(10, 2);
        let shared = |qos| Delivery {
            extra: Some(Box::new(DeliveryExtra { subscription_ids: Vec::new(), shared: Some("$share/g/t".into()) })),
            ..delivery(qos)
        };
        mailbox.push(shared(QoS::AtLeastOnce));
        mailbox.push(delivery(QoS::AtMostOnce));
        mailbox.push(shared(QoS::AtMostOnce));
        let taken = mailbox.take_shared();
        assert_eq!((taken.len(), mailbox.len()), (2, 1));
        mailbox.push(delivery(QoS::AtLeastOnce));
        mailbox.push(delivery(QoS::AtLeastOnce));
        // Full (2 QoS 1/2), yet the taken ones go back, first in the queue.
        mailbox.put_back(taken);
        let mut out = Vec::new();
        mailbox.drain_into(&mut out, 10);
        let order: Vec<(QoS, bool)> = out.iter().map(|d| (d.qos, d.shared().is_some())).collect();
        assert_eq!(
            order,
            [
                (QoS::AtLeastOnce, true),
                (QoS::AtMostOnce, true),
                (QoS::AtMostOnce, false),
                (QoS::AtLeastOnce, false),
                (QoS::AtLeastOnce, false)
            ]
        );
        assert_eq!(mailbox.len(), 0);
        assert_eq!(mailbox.push(delivery(QoS::AtMostOnce)), PushOutcome::Queued(Congestion::None), "counts are back to zero");
    }

    #[test]
    fn drain_respects_the_inflight_window_and_order() {
        let mailbox = Mailbox::new(10, 10);
        for qos in [QoS::AtLeastOnce, QoS::AtMostOnce, QoS::AtLeastOnce, QoS::AtMostOnce] {
            mailbox.push(delivery(qos));
        }
        let mut out = Vec::new();
        mailbox.drain_into(&mut out, 1);
        let got: Vec<_> = out.iter().map(|d| d.qos).collect();
        assert_eq!(got, [QoS::AtLeastOnce, QoS::AtMostOnce]);
        assert_eq!(mailbox.len(), 2);
    }

    /// Counts how often the connection task would be woken.
    #[derive(Default)]
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wakes(counter: &Arc<CountingWaker>) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    /// An online mailbox with `max_qos12`, and a waker counting its wake-ups.
    fn online_with_waker(max_qos12: usize) -> (Mailbox, Arc<CountingWaker>, Waker) {
        let mailbox = Mailbox::new(10, max_qos12);
        mailbox.set_online(true);
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&counter));
        (mailbox, counter, waker)
    }

    #[test]
    fn an_idle_connection_is_woken_by_a_push_and_asks_for_messages_only_with_an_open_window() {
        let (mailbox, counter, waker) = online_with_waker(10);
        let mut cx = Context::from_waker(&waker);
        assert_eq!(mailbox.poll_event(&mut cx, true), Poll::Pending);
        mailbox.push(delivery(QoS::AtLeastOnce));
        assert_eq!(wakes(&counter), 1, "the push wakes the waiting connection");
        assert_eq!(mailbox.poll_event(&mut cx, true), Poll::Ready(MailboxEvent::Messages));
        // A full in-flight window: queued messages do not make it ready, and more pushes do
        // not wake it (a subscriber that cannot take messages would be woken for nothing).
        assert_eq!(mailbox.poll_event(&mut cx, false), Poll::Pending);
        mailbox.push(delivery(QoS::AtLeastOnce));
        assert_eq!(wakes(&counter), 1);
        mailbox.ring(Alarm::Overflow);
        assert_eq!(wakes(&counter), 2, "an alarm still wakes it");
    }

    #[test]
    fn an_alarm_comes_before_messages_and_is_cleared_for_the_next_connection() {
        let (mailbox, counter, waker) = online_with_waker(10);
        mailbox.push(delivery(QoS::AtMostOnce));
        let mut cx = Context::from_waker(&waker);
        assert_eq!(mailbox.poll_event(&mut cx, false), Poll::Pending);
        mailbox.ring(Alarm::TakenOver);
        mailbox.ring(Alarm::Shutdown);
        assert_eq!(wakes(&counter), 1, "the first alarm wakes the connection");
        assert_eq!(mailbox.poll_event(&mut cx, true), Poll::Ready(MailboxEvent::Alarm(Alarm::TakenOver)), "the first reason stays");
        mailbox.set_online(false);
        mailbox.set_online(true);
        assert_eq!(mailbox.poll_event(&mut cx, true), Poll::Ready(MailboxEvent::Messages), "a new connection starts without the old alarm");
    }

    #[test]
    fn a_qos1_overflow_rings_the_alarm_even_with_a_full_window() {
        let (mailbox, counter, waker) = online_with_waker(1);
        let mut cx = Context::from_waker(&waker);
        mailbox.push(delivery(QoS::AtLeastOnce));
        assert_eq!(mailbox.poll_event(&mut cx, false), Poll::Pending);
        assert_eq!(mailbox.push(delivery(QoS::AtLeastOnce)), PushOutcome::Overflow);
        assert_eq!(wakes(&counter), 1);
        assert_eq!(mailbox.poll_event(&mut cx, false), Poll::Ready(MailboxEvent::Alarm(Alarm::Overflow)));
    }

    #[test]
    fn keep_alive_expires_only_past_the_deadline_and_never_without_one() {
        // [MQTT-3.1.2-24]
        let mailbox = Mailbox::new(10, 10);
        mailbox.set_online(true);
        assert!(!mailbox.expire_if_silent(u64::MAX), "keep-alive 0: never expires");
        mailbox.expect_by(1_500);
        assert!(!mailbox.expire_if_silent(1_500));
        assert!(mailbox.expire_if_silent(1_501));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(mailbox.poll_event(&mut cx, true), Poll::Ready(MailboxEvent::Alarm(Alarm::KeepAliveExpired)));
        mailbox.set_online(false);
        mailbox.set_online(true);
        assert!(!mailbox.expire_if_silent(u64::MAX), "the next connection sets its own deadline");
    }
}
