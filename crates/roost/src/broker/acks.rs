//! The durability guarantee of one connection: packets that promise something wait here until
//! it is true. Acknowledgements leave in the order their publishes arrived [MQTT-4.6.0-2], and
//! each only after the ingest sink's receipt and the broker state's commit (if any) resolved;
//! a QoS 2 PUBLISH or PUBREL to a persistent session, a SUBACK or UNSUBACK of one, wait here
//! too, until the packet id, release or subscription they depend on is stored.

use super::hooks::{NotStored, Receipt};
use super::subscription::Subscription;
use super::Message;
use mqtt_codec::{Packet, PacketId};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::oneshot::error::TryRecvError;

/// A packet waiting for its turn.
pub struct PendingAck {
    pub reply: Packet,
    /// The ingest sink's receipt for the publish this acknowledges.
    pub receipt: Option<Receipt>,
    /// Resolves once the broker state this packet promises is committed.
    pub committed: Option<Receipt>,
    /// For a QoS 1 publish handed to ingest: its packet id and content hash, remembered once
    /// committed so that a DUP resend is not stored twice.
    pub stored: Option<(PacketId, u64)>,
    /// For a SUBACK: the retained messages of its new subscriptions, sent after it.
    pub then_retained: Vec<(Arc<Message>, Subscription)>,
}

impl PendingAck {
    /// `reply` with nothing to wait for (still behind the acks before it).
    pub fn now(reply: Packet) -> Self {
        Self { reply, receipt: None, committed: None, stored: None, then_retained: Vec::new() }
    }

    /// `reply` once the broker state recorded so far is committed.
    pub fn after_commit(reply: Packet, committed: Option<Receipt>) -> Self {
        Self { committed, ..Self::now(reply) }
    }

    fn waits(&self) -> bool {
        self.receipt.is_some() || self.committed.is_some()
    }
}

/// The queue of waiting packets, in arrival order.
#[derive(Default)]
pub struct AckQueue(VecDeque<PendingAck>, usize);

impl AckQueue {
    pub fn push(&mut self, ack: PendingAck) {
        self.1 += usize::from(matches!(ack.reply, Packet::PubAck(_)));
        self.0.push_back(ack);
    }

    /// The PUBACKs waiting: QoS 1 publishes not yet acknowledged (5.0 receive maximum).
    pub fn pubacks(&self) -> usize {
        self.1
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets what still waits (the connection is gone).
    pub fn clear(&mut self) {
        self.0.clear();
        self.1 = 0;
    }

    /// Hands `release` every packet at the front whose receipts resolved, in order, and stops
    /// at the first that still waits. A receipt that failed (or was dropped) is an error: that
    /// packet and everything behind it must never be sent.
    pub fn release_ready(&mut self, mut release: impl FnMut(PendingAck)) -> Result<(), NotStored> {
        while let Some(front) = self.0.front_mut() {
            for slot in [&mut front.receipt, &mut front.committed] {
                let Some(receipt) = slot else { continue };
                match receipt.try_recv() {
                    Ok(Ok(())) => *slot = None,
                    Ok(Err(why)) => return Err(why),
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Closed) => return Err(NotStored::Dropped),
                }
            }
            let ack = self.0.pop_front().expect("front exists");
            self.1 -= usize::from(matches!(ack.reply, Packet::PubAck(_)));
            release(ack);
        }
        Ok(())
    }

    /// Ready once the oldest packet's receipts resolved (at once if it waits for nothing or
    /// the queue is empty); the caller then releases what is ready.
    pub fn poll_front(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NotStored>> {
        let Some(front) = self.0.front_mut() else { return Poll::Ready(Ok(())) };
        for slot in [&mut front.receipt, &mut front.committed] {
            let Some(receipt) = slot else { continue };
            match ready!(Pin::new(receipt).poll(cx)) {
                Ok(Ok(())) => *slot = None,
                Ok(Err(why)) => return Poll::Ready(Err(why)),
                Err(_) => return Poll::Ready(Err(NotStored::Dropped)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether the oldest packet waits for a receipt (what a waiting connection polls).
    pub fn front_waits(&self) -> bool {
        self.0.front().is_some_and(PendingAck::waits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::Ack;
    use tokio::sync::oneshot;

    fn puback(id: u16) -> Packet {
        Packet::PubAck(Ack::new(PacketId::new(id).unwrap()))
    }

    fn released(queue: &mut AckQueue) -> Result<Vec<Packet>, NotStored> {
        let mut out = Vec::new();
        queue.release_ready(|ack| out.push(ack.reply))?;
        Ok(out)
    }

    /// [MQTT-4.6.0-2] acknowledgements in arrival order, each only once stored: a later
    /// publish committed first still waits behind an earlier one.
    #[test]
    fn acks_leave_in_arrival_order_and_only_after_their_receipts() {
        let mut queue = AckQueue::default();
        let (first_tx, first) = oneshot::channel();
        let (second_tx, second) = oneshot::channel();
        queue.push(PendingAck { receipt: Some(first), ..PendingAck::now(puback(1)) });
        queue.push(PendingAck { receipt: Some(second), ..PendingAck::now(puback(2)) });
        queue.push(PendingAck::now(puback(3)));
        second_tx.send(Ok(())).unwrap();
        assert_eq!(released(&mut queue).unwrap(), [], "the first still waits");
        first_tx.send(Ok(())).unwrap();
        assert_eq!(released(&mut queue).unwrap(), [puback(1), puback(2), puback(3)]);
        assert!(queue.is_empty());
    }

    #[test]
    fn an_ack_waiting_for_ingest_and_the_broker_state_needs_both() {
        let mut queue = AckQueue::default();
        let (ingest_tx, receipt) = oneshot::channel();
        let (state_tx, committed) = oneshot::channel();
        queue.push(PendingAck { receipt: Some(receipt), committed: Some(committed), ..PendingAck::now(puback(1)) });
        state_tx.send(Ok(())).unwrap();
        assert_eq!(released(&mut queue).unwrap(), []);
        assert!(queue.front_waits());
        ingest_tx.send(Ok(())).unwrap();
        assert_eq!(released(&mut queue).unwrap(), [puback(1)]);
    }

    /// A failed or dropped receipt: nothing from there on is acknowledged (the client resends).
    #[test]
    fn a_failed_or_dropped_receipt_releases_nothing_after_it() {
        for fail in [true, false] {
            let mut queue = AckQueue::default();
            let (tx, receipt) = oneshot::channel();
            queue.push(PendingAck::now(puback(1)));
            queue.push(PendingAck { committed: Some(receipt), ..PendingAck::now(puback(2)) });
            queue.push(PendingAck::now(puback(3)));
            if fail {
                tx.send(Err(NotStored::Refused("a value too long".into()))).unwrap();
            } else {
                drop(tx);
            }
            let mut out = Vec::new();
            assert!(queue.release_ready(|ack| out.push(ack.reply)).is_err());
            assert_eq!(out, [puback(1)], "only the ack before the failed one");
            assert_eq!(queue.len(), 2, "none lost silently: the rest stays until the connection ends");
        }
    }

    #[tokio::test]
    async fn a_waiting_connection_wakes_when_the_oldest_receipt_resolves() {
        let mut queue = AckQueue::default();
        let (tx, receipt) = oneshot::channel();
        queue.push(PendingAck { receipt: Some(receipt), ..PendingAck::now(puback(1)) });
        let waiter = tokio::spawn(async move {
            std::future::poll_fn(|cx| queue.poll_front(cx)).await.unwrap();
            released(&mut queue).unwrap()
        });
        tokio::task::yield_now().await;
        tx.send(Ok(())).unwrap();
        assert_eq!(waiter.await.unwrap(), [puback(1)]);
    }
}
