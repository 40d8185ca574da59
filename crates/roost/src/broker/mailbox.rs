//! The bounded queue of messages waiting to be sent to one session, online or not.
//!
//! Publishers push without ever waiting (a short lock, no `.await`); the session's connection
//! task drains it. Limits and overflow policy: see [`super::BrokerConfig`].

use super::Message;
use mqtt_codec::QoS;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One message as this session receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// The QoS granted to this subscriber: the lower of the message's and the subscription's.
    pub qos: QoS,
    /// Set only when sent because of a new subscription to a retained message [MQTT-3.3.1-9].
    pub retain: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued; `congested` when the queue is over half full, a hint for the publisher to let
    /// the subscriber's task run before it reads more.
    Queued { congested: bool },
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
    /// Another connection took this session over.
    kicked: bool,
}

/// Why the session's connection must end now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    TakenOver,
    Overflow,
}

/// Also the session's line to its connection: a takeover or an overflow rings `alarm`, so an
/// idle connection waits on one `Notify` for both (it is what an idle connection costs).
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    notify: Notify,
    alarm: Notify,
    max_qos0: usize,
    max_qos12: usize,
}

impl Mailbox {
    pub fn new(max_qos0: usize, max_qos12: usize) -> Self {
        Self { inner: Mutex::default(), notify: Notify::new(), alarm: Notify::new(), max_qos0, max_qos12 }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-updated: recover it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, delivery: Delivery) -> PushOutcome {
        let mut inner = self.lock();
        let outcome = if delivery.qos == QoS::AtMostOnce {
            if inner.queued_qos0 >= self.max_qos0 {
                return PushOutcome::DroppedQoS0;
            }
            inner.queued_qos0 += 1;
            PushOutcome::Queued { congested: false }
        } else if inner.queued_qos12 >= self.max_qos12 {
            if !inner.online {
                return PushOutcome::DroppedOffline;
            }
            inner.overflowed = true;
            self.alarm.notify_one();
            PushOutcome::Overflow
        } else {
            inner.queued_qos12 += 1;
            PushOutcome::Queued { congested: false }
        };
        let outcome = match outcome {
            PushOutcome::Queued { .. } => {
                inner.queue.push_back(delivery);
                let congested = inner.queued_qos0 * 2 > self.max_qos0 || inner.queued_qos12 * 2 > self.max_qos12;
                PushOutcome::Queued { congested }
            }
            other => other,
        };
        drop(inner);
        self.notify.notify_one();
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

    /// A connection starts (`true`, with no alarm pending) or ends using this session.
    pub fn set_online(&self, online: bool) {
        let mut inner = self.lock();
        inner.online = online;
        if online {
            inner.kicked = false;
            inner.overflowed = false;
        }
    }

    /// Tells the connection using this session to end: another one takes it over.
    pub fn kick(&self) {
        self.lock().kicked = true;
        self.alarm.notify_one();
    }

    /// What rang the alarm, if anything is still pending.
    pub fn alarm_reason(&self) -> Option<Alarm> {
        let inner = self.lock();
        if inner.kicked {
            Some(Alarm::TakenOver)
        } else if inner.overflowed {
            Some(Alarm::Overflow)
        } else {
            None
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Resolves when a takeover or an overflow happened (see `alarm_reason`), even while the
    /// in-flight window is full and the session is not draining.
    pub async fn alarm(&self) {
        self.alarm.notified().await;
    }

    /// Resolves after the next push (or at once if one happened since the last wait).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::TopicName;

    fn delivery(qos: QoS) -> Delivery {
        let message = Message { topic: TopicName::parse("t").unwrap(), payload: Default::default(), qos, retain: false };
        Delivery { message: Arc::new(message), qos, retain: false }
    }

    #[test]
    fn qos0_over_the_limit_is_dropped_and_qos1_overflow_flags_an_online_session() {
        let mailbox = Mailbox::new(1, 1);
        mailbox.set_online(true);
        assert_eq!(mailbox.push(delivery(QoS::AtMostOnce)), PushOutcome::Queued { congested: true });
        assert_eq!(mailbox.push(delivery(QoS::AtMostOnce)), PushOutcome::DroppedQoS0);
        assert_eq!(mailbox.push(delivery(QoS::AtLeastOnce)), PushOutcome::Queued { congested: true });
        assert_eq!(mailbox.push(delivery(QoS::AtLeastOnce)), PushOutcome::Overflow);
        let mut out = Vec::new();
        assert!(mailbox.drain_into(&mut out, 10), "overflow is reported to the session");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn offline_overflow_drops_instead_of_flagging() {
        let mailbox = Mailbox::new(1, 1);
        mailbox.push(delivery(QoS::ExactlyOnce));
        assert_eq!(mailbox.push(delivery(QoS::ExactlyOnce)), PushOutcome::DroppedOffline);
        assert!(!mailbox.drain_into(&mut Vec::new(), 10));
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
}
