//! The QoS 1 publishes of a session that ingest committed most recently: a DUP resend of one
//! (its PUBACK was lost with the connection [MQTT-4.4.0-1]) is acknowledged again, not stored
//! twice.
//!
//! Only publishes whose PUBACK the client may not have received can come back, and a client
//! has at most its in-flight window of those. So the session remembers a few times the most
//! publishes it ever had waiting for acknowledgement, not every packet id it ever used: a board
//! with one publish in flight costs a few hundred bytes, where a map of every id grew to all
//! 65,535 of them (1.5 MB per session, counted by allocator).

use mqtt_codec::PacketId;
use std::collections::VecDeque;

/// Remembered at least this many, whatever the window seen.
const KEEP_AT_LEAST: usize = 16;

/// The most recently committed QoS 1 publishes. One pointer until the session's first one
/// (it lives in every connection's future, whose size is most of an idle connection's cost).
#[derive(Debug, Default)]
pub struct CommittedQos1(Option<Box<Recent>>);

#[derive(Debug, Default)]
struct Recent {
    /// Oldest first: packet id and a hash of topic and payload.
    publishes: VecDeque<(PacketId, u64)>,
    /// The most QoS 1 publishes this session had unacknowledged at once.
    window: usize,
}

impl CommittedQos1 {
    /// Remembers a committed publish; `unacknowledged`: how many of the session's QoS 1
    /// publishes wait for their PUBACK, this one included; `limit`: the most ever kept.
    pub fn remember(&mut self, id: PacketId, hash: u64, unacknowledged: usize, limit: usize) {
        let recent = self.0.get_or_insert_default();
        recent.window = recent.window.max(unacknowledged);
        let keep = (2 * recent.window).max(KEEP_AT_LEAST).min(limit.max(KEEP_AT_LEAST));
        while recent.publishes.len() >= keep {
            recent.publishes.pop_front();
        }
        recent.publishes.push_back((id, hash));
    }

    /// Whether the newest publish remembered under `id` had this hash (a DUP resend of it).
    pub fn holds(&self, id: PacketId, hash: u64) -> bool {
        let Some(recent) = &self.0 else { return false };
        recent.publishes.iter().rev().find(|(seen, _)| *seen == id).is_some_and(|(_, seen)| *seen == hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(id: u16) -> PacketId {
        PacketId::new(id).unwrap()
    }

    #[test]
    fn a_resend_matches_the_newest_publish_under_its_id() {
        let mut committed = CommittedQos1::default();
        assert!(!committed.holds(pid(7), 1), "nothing committed yet");
        assert_eq!(std::mem::size_of::<CommittedQos1>(), 8, "one pointer in every session");
        committed.remember(pid(7), 1, 1, 1000);
        assert!(committed.holds(pid(7), 1));
        assert!(!committed.holds(pid(7), 2), "same id, other content: a new publish");
        assert!(!committed.holds(pid(8), 1));
        committed.remember(pid(7), 2, 1, 1000);
        assert!(committed.holds(pid(7), 2));
        assert!(!committed.holds(pid(7), 1), "the id was reused: the older publish is acknowledged for sure");
    }

    #[test]
    fn a_session_keeps_a_few_times_its_window() {
        let mut board = CommittedQos1::default();
        for id in 1..=60_000u16 {
            board.remember(pid(id), u64::from(id), 1, 1000);
        }
        assert_eq!(board.0.as_ref().unwrap().publishes.len(), KEEP_AT_LEAST, "one in flight: not every id it ever used");
        assert!(board.holds(pid(60_000), 60_000));
        assert!(!board.holds(pid(1), 1));

        let mut gateway = CommittedQos1::default();
        for id in 1..=10_000u16 {
            gateway.remember(pid(id), u64::from(id), 100, 1000);
        }
        assert_eq!(gateway.0.as_ref().unwrap().publishes.len(), 200);
        assert!(gateway.holds(pid(9_801), 9_801), "the last two windows are remembered");

        let mut greedy = CommittedQos1::default();
        for id in 1..=10_000u16 {
            greedy.remember(pid(id), u64::from(id), 5_000, 1000);
        }
        assert_eq!(greedy.0.as_ref().unwrap().publishes.len(), 1000, "never more than the limit");
    }
}
